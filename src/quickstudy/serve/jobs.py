"""Background jobs in threads of the server process, at most one running at a time, polled by id.

A job's work is called with a reporter of its progress, ``report(phase, done)``: the phase it is in
(one of the job's ``phases``, in their order; a phase may be skipped) and the share of that phase
done. The job's progress is the share of the phases' weights done, never lower than it was. The work
returns its result as JSON-ready data; a :class:`QuickstudyError` it raises becomes the
job's one-line ``error``; any other exception is logged with its traceback and reported as an
internal error. The jobs live as long as the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import now

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

Report = Callable[[str, float], None]


@dataclass
class Job:
    id: int
    kind: str
    author: str
    request: dict[str, Any]
    phases: Mapping[str, float] = field(default_factory=dict)
    state: str = QUEUED
    phase: str | None = None
    progress: float = 0.0
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
            "phase": self.phase,
            "progress": 1.0 if self.state == DONE else round(self.progress, 4),
            "seconds": None if self.started is None else round(end - self.started, 3),
            "result": self.result,
            "error": self.error,
            "created": self.created,
        }

    def report(self, phase: str, done: float) -> None:
        """Called (under the jobs' lock) by the work: ``done`` of ``phase`` is done."""
        if phase not in self.phases:
            raise ValueError(f"{self.kind} job: unknown phase {phase!r} (not one of {list(self.phases)})")
        names = list(self.phases)
        before = sum(self.phases[name] for name in names[: names.index(phase)])
        total = sum(self.phases.values())
        share = (before + self.phases[phase] * min(max(done, 0.0), 1.0)) / total
        self.phase, self.progress = phase, max(self.progress, share)


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
        self,
        kind: str,
        author: str,
        request: dict[str, Any],
        work: Callable[[Report], dict[str, Any]],
        phases: Mapping[str, float],
    ) -> dict[str, Any]:
        """Start ``work`` in a thread, passing it the job's reporter; ``phases`` maps each phase
        name, in order, to its weight (its rough share of the time). Returns the new job. Raises
        :class:`JobRunning`."""
        with self._lock:
            active = self._active()
            if active is not None:
                raise JobRunning(active)
            job = Job(len(self._jobs) + 1, kind, author, request, phases)
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

    def _report(self, job: Job, phase: str, done: float) -> None:
        with self._lock:
            job.report(phase, done)

    def _run(self, job: Job, work: Callable[[Report], dict[str, Any]]) -> None:
        with self._lock:
            job.state, job.started = RUNNING, time.monotonic()
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = work(lambda phase, done: self._report(job, phase, done))
        except QuickstudyError as failure:
            error = str(failure)
        except Exception as failure:
            log.exception("%s job %d failed", job.kind, job.id)
            error = f"internal error: {type(failure).__name__}: {failure}"
        with self._lock:
            job.result, job.error = result, error
            job.state = FAILED if error is not None else DONE
            job.finished = time.monotonic()
