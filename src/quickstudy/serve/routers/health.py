"""``GET /api/health``: the server answers, with the store's and the model's versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from quickstudy import __version__
from quickstudy.serve.dependencies import Model, Settings
from quickstudy.serve.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(settings: Settings, model: Model) -> dict[str, Any]:
    with settings.open_store() as store:
        taxonomy_version = store.taxonomy_version()
    return {
        "status": "ok",
        "quickstudy": __version__,
        "model_version": model.version(),
        "taxonomy_version": taxonomy_version,
        "kind": model.kind,
        "disabled": list(model.disabled),
    }
