"""The prediction cache's progress, and the groups of ``unknown`` detections: list them, name one
(its boxes become stored boxes of the class: the new type's support for learn)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from quickstudy.errors import QuickstudyError
from quickstudy.serve.dependencies import Author, Filler, Model, Settings
from quickstudy.serve.predictors import EXPORT, CurrentModel
from quickstudy.serve.schemas import CacheProgress, GroupNamed, NameGroup, UnknownGroups

router = APIRouter(tags=["predictions"])

Similarity = Annotated[
    float, Query(gt=0, le=1, description="members of a group are at least this similar on average (cosine)")
]


@router.get("/cache", response_model=CacheProgress)
def cache(filler: Filler) -> dict[str, Any]:
    """How far the background job has predicted the store's images with the current model."""
    return filler.status()


def _refuse_export(model: CurrentModel) -> None:
    if model.kind == EXPORT:  # the app answers 409 with this line
        raise QuickstudyError(
            "unknown groups need the model folder: an export's runtime gives no embeddings to group by; "
            "serve the model folder with --model for them"
        )


@router.get("/unknowns", response_model=UnknownGroups)
def unknowns(
    settings: Settings, model: Model, filler: Filler, similarity: Similarity = 0.8
) -> dict[str, Any]:
    """The detections the current model calls ``unknown`` on the cached images (those not yet under
    a box with a class), grouped by embedding similarity; largest group first. Refused (409) when
    the server serves an export."""
    _refuse_export(model)
    from quickstudy.serve.unknowns import unknown_groups  # torch: past the refusal of an export

    key = model.identity()
    with settings.open_store() as store:
        groups, found = unknown_groups(filler.cache, key, store, similarity)
    return {
        "model_version": model.version(),
        "similarity": similarity,
        "unknowns": found,
        "grouped": sum(g["size"] for g in groups),
        "cache": filler.status(),
        "groups": groups,
    }


@router.post("/unknowns/{key}/name", response_model=GroupNamed, status_code=status.HTTP_201_CREATED)
def name(
    key: str, body: NameGroup, settings: Settings, model: Model, filler: Filler, author: Author
) -> dict[str, Any]:
    """Name the group ``key``: each member becomes a stored box of ``class`` (added to the
    taxonomy when new), a journaled box edit by the author. Refused (409) when the group is no
    longer as listed (the model, its predictions or the boxes changed): list the groups again."""
    _refuse_export(model)
    from quickstudy.serve.unknowns import name_group, unknown_groups

    with settings.open_store() as store:
        groups, _ = unknown_groups(filler.cache, model.identity(), store, body.similarity)
        group = next((g for g in groups if g["key"] == key), None)
        if group is None:
            raise QuickstudyError(
                f"no unknown group {key} now (the predictions or the boxes changed); list them again"
            )
        with store.transaction():
            done = name_group(store, group, body.class_name, author)
            return {**done, "edit": store.last_edit()}
