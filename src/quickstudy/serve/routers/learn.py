"""``POST /api/learn`` starts a background job that adds a class to the model from its marked boxes;
``GET /api/jobs/{id}`` polls it, with the step it is in and its progress; its result says, before and
after, how the type's held-out boxes are named (:mod:`~quickstudy.serve.outcome`). One job runs at a
time. The job writes a new model version and makes it current only when it succeeds: a failed job
leaves the current version as it was."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, status

from quickstudy.serve.dependencies import Author, Jobs, Model, Settings
from quickstudy.serve.jobs import JobRunning, Report
from quickstudy.serve.schemas import JobOut, LearnRequest

router = APIRouter(tags=["learn"])

# A learn job's steps, in order, with their rough share of its time on a CPU (the localizer's
# training steps and the before/after predictions weigh most): learn_class's phases, the ONNX
# exports, then the outcome's predictions by the previous version and the new one.
LEARN_JOB_PHASES = {
    "support": 1.0,
    "localizer": 4.0,
    "recognizer": 1.0,
    "transductive": 2.0,
    "threshold": 1.0,
    "exports": 1.0,
    "before": 3.0,
    "after": 3.0,
}


@router.post("/learn", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def learn(body: LearnRequest, settings: Settings, model: Model, jobs: Jobs, author: Author) -> dict[str, Any]:
    """Learn ``class`` from its marked boxes in ``images`` (or in every TRAIN image), as
    ``quickstudy learn`` does; poll the returned job. Refused (409) when the server serves an export."""
    folder = model.model_folder("learn")
    # torch and the training code: past the refusal of an export, which predicts without them
    from quickstudy.deploy.export import refresh_exports
    from quickstudy.detect import learn_class
    from quickstudy.serve.outcome import learn_outcome

    images: list[Path] | None = None
    if body.images is not None:
        with settings.open_store() as store:
            paths = {image.image_id: image.path for image in store.images()}
        missing = [i for i in body.images if i not in paths]
        if missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image {missing[0]} in the store")
        images = [paths[i] for i in dict.fromkeys(body.images)]

    def work(report: Report) -> dict[str, Any]:
        previous = folder.current()
        started = time.perf_counter()
        with settings.open_store() as store:
            version = learn_class(
                settings.model,
                store,
                body.class_name,
                images=images,
                adapt=body.adapt,
                localizer=body.adapt_localizer,
                recognizer=body.adapt_recognizer,
                device=settings.device,
                progress=report,
            )
            learn_seconds = round(time.perf_counter() - started, 3)
            report("exports", 0.0)
            refresh_exports(settings.model)  # the new class reaches the model's ONNX exports
            report("exports", 1.0)
            outcome = learn_outcome(
                settings.model,
                store,
                body.class_name,
                images,
                previous,
                version,
                body.adapt,
                settings.device,
                progress=report,
            )
        return {
            "class": body.class_name,
            "version": version,
            "previous_version": previous,
            "learn_seconds": learn_seconds,
            "outcome": outcome,
        }

    try:
        return jobs.start("learn", author, body.model_dump(by_alias=True), work, LEARN_JOB_PHASES)
    except JobRunning as running:
        raise HTTPException(status.HTTP_409_CONFLICT, str(running)) from None


@router.get("/jobs/{job_id}", response_model=JobOut)
def job(job_id: int, jobs: Jobs) -> dict[str, Any]:
    """A job's state (queued, running, done, failed), its result or its one-line error."""
    found = jobs.get(job_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return found
