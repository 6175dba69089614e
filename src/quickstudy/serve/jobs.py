"""Background jobs in threads of the server process, at most one running at a time, polled by id.

A job's work returns its result as JSON-ready data; a :class:`QuickstudyError` it raises becomes the
job's one-line ``error``; any other exception is logged with its traceback and reported as an
internal error. The jobs live as long as the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import now

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass
class Job:
    id: int
    kind: str
    author: str
    request: dict[str, Any]
    state: str = QUEUED
    result: dict[str, Any] | None = None
    error: str | None = None
    created: str = field(default_factory=now)
    started: float | None = None
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "id": self.id,
            "kind": self.kind,
            "author": self.author,
            "request": self.request,
            "state": self.state,
            # the work reports no steps of its own: 0 until it ends, 1 when it is done
            "progress": 1.0 if self.state == DONE else 0.0,
            "seconds": None if self.started is None else round(end - self.started, 3),
            "result": self.result,
            "error": self.error,
            "created": self.created,
        }


class JobRunning(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.kind} job {job.id} is {job.state}; wait for it to end")
        self.job = job


class BackgroundJobs:
    """Jobs of this process; starting one while another is queued or running is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}

    def start(
        self, kind: str, author: str, request: dict[str, Any], work: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Start ``work`` in a thread; returns the new job. Raises :class:`JobRunning`."""
        with self._lock:
            active = self._active()
            if active is not None:
                raise JobRunning(active)
            job = Job(len(self._jobs) + 1, kind, author, request)
            self._jobs[job.id] = job
            snapshot = job.to_dict()
        threading.Thread(target=self._run, args=(job, work), name=f"{kind}-job-{job.id}", daemon=True).start()
        return snapshot

    def _active(self) -> Job | None:
        return next((job for job in self._jobs.values() if job.state in (QUEUED, RUNNING)), None)

    def running(self) -> dict[str, Any] | None:
        """The job queued or running, if any."""
        with self._lock:
            active = self._active()
            return None if active is None else active.to_dict()

    def get(self, job_id: int) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict()

    def _run(self, job: Job, work: Callable[[], dict[str, Any]]) -> None:
        with self._lock:
            job.state, job.started = RUNNING, time.monotonic()
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = work()
        except QuickstudyError as failure:
            error = str(failure)
        except Exception as failure:
            log.exception("%s job %d failed", job.kind, job.id)
            error = f"internal error: {type(failure).__name__}: {failure}"
        with self._lock:
            job.result, job.error = result, error
            job.state = FAILED if error is not None else DONE
            job.finished = time.monotonic()
