"""Boxes: create, move or resize, relabel, delete. Each edit is one store transaction, journaled
with its author and undoable (``POST /api/taxonomy/undo``), and carries the version of the image it
was made on: when someone changed the image since, it is refused with 409 and the image as it is
now, never written over what they did."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from quickstudy.labels.records import ShownBox
from quickstudy.labels.store import Label, Store, Unchanged
from quickstudy.serve.dependencies import Author, Settings
from quickstudy.serve.routers.images import STALE, image_detail, shown_box
from quickstudy.serve.schemas import BoxEdited, BoxPatch, ImageEdit, NewBox
from quickstudy.serve.schemas import Label as LabelOut

router = APIRouter(tags=["boxes"])


def store_label(label: LabelOut) -> Label:
    """A label as the API takes it (a name, a list of names, or null) as the store takes it."""
    return frozenset(label) if isinstance(label, list) else label


def _edited(store: Store, box: ShownBox) -> dict[str, Any]:
    """The answer to a box edit (inside its transaction): the image after it, the journal entry, and
    the box (as it was, for a delete)."""
    return {
        "image": image_detail(store.image(box.record.image_id)),
        "edit": store.last_edit(),
        "box": shown_box(box),
    }


@router.post(
    "/images/{image_id}/boxes", response_model=BoxEdited, status_code=status.HTTP_201_CREATED, responses=STALE
)
def create_box(image_id: int, body: NewBox, settings: Settings, author: Author) -> dict[str, Any]:
    """Draw a box on the image: with a class, a list of classes (a partial label) or none."""
    with settings.open_store() as store, store.transaction():
        box_id = store.add_box(
            image_id, body.box, store_label(body.class_name), author=author, expected_version=body.version
        )
        return _edited(store, store.box(box_id))


@router.patch("/boxes/{box_id}", response_model=BoxEdited, responses=STALE)
def update_box(box_id: int, body: BoxPatch, settings: Settings, author: Author) -> dict[str, Any]:
    """Move or resize the box (``box``), relabel it (``class``: a name, a list of names, or null for
    no class), or both; a field left out stays as it is."""
    relabel = "class_name" in body.model_fields_set
    with settings.open_store() as store, store.transaction():
        store.update_box(
            box_id,
            xyxy=body.box,
            label=store_label(body.class_name) if relabel else Unchanged.LABEL,
            author=author,
            expected_version=body.version,
        )
        return _edited(store, store.box(box_id))


@router.delete("/boxes/{box_id}", response_model=BoxEdited, responses=STALE)
def delete_box(box_id: int, body: ImageEdit, settings: Settings, author: Author) -> dict[str, Any]:
    """Delete the box; the journal keeps it, so that undo brings it back under its id."""
    with settings.open_store() as store, store.transaction():
        before = store.box(box_id)
        store.delete_box(box_id, author=author, expected_version=body.version)
        return _edited(store, before)
