"""Model versions: list them, make one current, go back to the one before the current. An export
lists the one version it holds and refuses the rest (it needs the model folder)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from quickstudy.serve.dependencies import Jobs, Model
from quickstudy.serve.jobs import BackgroundJobs
from quickstudy.serve.predictors import CurrentModel
from quickstudy.serve.schemas import Models, UseVersion

router = APIRouter(prefix="/models", tags=["models"])


def _listing(model: CurrentModel) -> dict[str, Any]:
    return {
        "current": model.version(),
        "versions": model.versions(),
        "kind": model.kind,
        "disabled": list(model.disabled),
    }


def _refuse_while_learning(jobs: BackgroundJobs) -> None:
    running = jobs.running()
    if running is not None and running["kind"] == "learn":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"learn job {running['id']} is {running['state']} and will make its own version current; "
            "wait for it to end",
        )


@router.get("", response_model=Models)
def versions(model: Model) -> dict[str, Any]:
    """Every version of the model folder, oldest first, with its classes and note."""
    return _listing(model)


@router.post("/use", response_model=Models)
def use(body: UseVersion, model: Model, jobs: Jobs) -> dict[str, Any]:
    """Make a version current; predictions use it from the next request on."""
    folder = model.model_folder("models use")
    from quickstudy.deploy.export import refresh_exports  # torch: past the refusal of an export

    _refuse_while_learning(jobs)
    folder.use(body.version)
    refresh_exports(folder.root)
    return _listing(model)


@router.post("/undo", response_model=Models)
def undo(model: Model, jobs: Jobs) -> dict[str, Any]:
    """Make the version before the current one current (the current one stays on disk)."""
    folder = model.model_folder("models undo")
    from quickstudy.deploy.export import refresh_exports

    _refuse_while_learning(jobs)
    folder.undo()  # a first version is refused: the app answers a store/model refusal with 409
    refresh_exports(folder.root)
    return _listing(model)
