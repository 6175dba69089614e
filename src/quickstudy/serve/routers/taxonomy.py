"""Class definitions: list, add, rename, merge, split, retire, the edit history and undo.

Every change runs the store's own taxonomy operation in one transaction and answers with what it
did to the meaning of boxes, found by resolving every box's label before and after the change
inside that transaction. With ``dry_run`` the transaction is rolled back: the answer says what the
change would do ("179 boxes labelled line will mean one of {inclusion, scratches}") and the store
is as it was. A box that comes to have no class is said to be of a type no class names (its class
retired as ``unnamed``: never to be named as another class in training) or of the other current
classes (retired as ``other-types``: training may pseudo-label it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, status

from quickstudy.labels.store import Store
from quickstudy.serve.dependencies import Author, Settings
from quickstudy.serve.schemas import (
    AddClass,
    Classes,
    Edit,
    MergeClasses,
    RenameClass,
    RetireClass,
    SplitClass,
    TaxonomyChange,
    Undo,
    label,
)

router = APIRouter(prefix="/taxonomy", tags=["taxonomy"])


class _RollBack(Exception):
    """Raised inside a dry run's transaction so that the store rolls it back."""


Meaning = tuple[frozenset[str], bool]


def _meanings(store: Store) -> dict[int, Meaning]:
    """Box id -> the set of current classes its label means, and whether it is of a type no class
    names (a class retired as ``unnamed``)."""
    resolution = store.taxonomy.resolution()
    unnamed = store.taxonomy.unnamed_ids()
    return {
        box.box_id: (frozenset(), False)
        if box.class_id is None
        else (resolution[box.class_id], box.class_id in unnamed)
        for box in store.boxes()
    }


def _words(names: frozenset[str]) -> str:
    if len(names) == 1:
        return next(iter(names))
    return "one of {" + ", ".join(sorted(names)) + "}"


# What a box without a class is, by whether its class was retired as unnamed, for the summary.
_NO_CLASS = {
    True: "a type no class names: never named as another class in training (no pseudo-labels)",
    False: "of the other current classes: training may pseudo-label them as one",
}


def _sentence(boxes: int, before: Meaning, after: Meaning, dry_run: bool) -> str:
    (old, was_unnamed), (new, unnamed) = before, after
    subject = f"{boxes} box{'' if boxes == 1 else 'es'} " + (
        f"labelled {_words(old)}"
        if old
        else f"without a current class ({'unnamed' if was_unnamed else 'other types'})"
    )
    if not new and old:
        return f"{subject} {'will have' if dry_run else 'now have'} no class: {_NO_CLASS[unnamed]}"
    if not new:
        return f"{subject} {'will be' if dry_run else 'are now'} {_NO_CLASS[unnamed]}"
    return f"{subject} {'will mean' if dry_run else 'now mean'} {_words(new)}"


def _change(settings: Settings, dry_run: bool, operation: Callable[[Store], int]) -> dict[str, Any]:
    """Run ``operation`` (which returns the id of the edit it is about) in one transaction, rolled
    back for a dry run; the answer names the edit and how each group of boxes changes meaning."""
    with settings.open_store() as store:
        try:
            with store.transaction():
                before = _meanings(store)
                edit_id = operation(store)
                after = _meanings(store)
                edit = next(e for e in store.history() if e["id"] == edit_id)
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass
        version = store.taxonomy_version()
    moved = Counter(
        (before[box], after[box]) for box in before.keys() & after.keys() if before[box] != after[box]
    )
    # an undo of a box edit removes a box (undoing its add) or brings one back (undoing its delete)
    removed, restored = len(before.keys() - after.keys()), len(after.keys() - before.keys())
    boxes = [
        f"{n} box{'' if n == 1 else 'es'} " + (f"will be {what}" if dry_run else what)
        for n, what in ((removed, "removed"), (restored, "restored"))
        if n
    ]
    return {
        "dry_run": dry_run,
        "edit": edit,
        "taxonomy_version": version,
        "changes": [
            {"boxes": n, "before": label(old[0]), "after": label(new[0]), "unnamed": new[1]}
            for (old, new), n in moved.items()
        ],
        "summary": [_sentence(n, old, new, dry_run) for (old, new), n in moved.items()] + boxes
        or ["no box changes meaning"],
    }


def _latest_edit(store: Store) -> int:
    return int(store.history()[-1]["id"])


@router.get("", response_model=Classes)
def classes(settings: Settings) -> dict[str, Any]:
    """Current classes with the number of boxes labelled exactly each, and the partial label sets."""
    with settings.open_store() as store:
        stats = store.stats()
    return {
        "taxonomy_version": stats["taxonomy_version"],
        "classes": [{"name": name, "boxes": n} for name, n in stats["per_class"].items()],
        "partial_label_sets": stats["partial_label_sets"],
    }


@router.get("/history", response_model=list[Edit])
def history(settings: Settings) -> list[dict[str, Any]]:
    """Every edit of the store, oldest first (taxonomy, labels, splits, imports), with author and time."""
    with settings.open_store() as store:
        return store.history()


def _latest(edit: Callable[[Store], object]) -> Callable[[Store], int]:
    """An operation for :func:`_change` whose edit is the store's latest (every change but undo)."""

    def operation(store: Store) -> int:
        edit(store)
        return _latest_edit(store)

    return operation


@router.post("/add", response_model=TaxonomyChange)
def add(body: AddClass, settings: Settings, author: Author) -> dict[str, Any]:
    return _change(
        settings, body.dry_run, _latest(lambda store: store.taxonomy.add(body.name, author=author))
    )


@router.post("/rename", response_model=TaxonomyChange)
def rename(body: RenameClass, settings: Settings, author: Author) -> dict[str, Any]:
    return _change(
        settings,
        body.dry_run,
        _latest(lambda store: store.taxonomy.rename(body.old, body.new, author=author)),
    )


@router.post("/merge", response_model=TaxonomyChange)
def merge(body: MergeClasses, settings: Settings, author: Author) -> dict[str, Any]:
    return _change(
        settings,
        body.dry_run,
        _latest(lambda store: store.taxonomy.merge(body.sources, body.target, author=author)),
    )


@router.post("/split", response_model=TaxonomyChange)
def split(body: SplitClass, settings: Settings, author: Author) -> dict[str, Any]:
    return _change(
        settings,
        body.dry_run,
        _latest(lambda store: store.taxonomy.split(body.source, body.targets, author=author)),
    )


@router.post("/retire", response_model=TaxonomyChange)
def retire(body: RetireClass, settings: Settings, author: Author) -> dict[str, Any]:
    """Retire a class, keeping its boxes, as ``quickstudy taxonomy retire --meaning``; on a retired
    class, change only what its boxes are."""
    return _change(
        settings,
        body.dry_run,
        _latest(lambda store: store.taxonomy.retire(body.name, body.meaning, author=author)),
    )


@router.post("/undo", response_model=TaxonomyChange)
def undo(body: Undo, settings: Settings, author: Author) -> dict[str, Any]:
    """Undo the store's latest edit not yet undone, as ``quickstudy taxonomy undo`` does; the
    answer's ``edit`` is the edit undone, with who made it. Give ``edit`` to be sure that it is the
    one you saw: on a shared server someone may have edited since."""

    def operation(store: Store) -> int:
        undone = store.undo(author=author)
        if body.edit is not None and undone["id"] != body.edit:
            latest = next(e for e in store.history() if e["id"] == undone["id"])
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"edit {body.edit} is no longer the latest: edit {latest['id']} ({latest['kind']} by "
                f"{latest['author']} at {latest['time']}) came after it; nothing was undone",
            )
        return int(undone["id"])

    return _change(settings, body.dry_run, operation)
