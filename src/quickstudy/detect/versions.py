"""A model folder: numbered versions of a detector, one of them current.

``train`` writes version 1; every ``learn`` writes the next version and makes it current; the old
ones stay, so ``use`` goes back exactly (the file is the file). Layout::

    DIR/checkpoint.pt      the training run's resumable state (quickstudy.train)
    DIR/versions/v1.pt     detector checkpoints (kind "detector")
    DIR/CURRENT            the current version number

>>> folder = ModelFolder("runs/neu")  # doctest: +SKIP
>>> folder.current(), [v.number for v in folder.versions()]  # doctest: +SKIP
(2, [1, 2])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from quickstudy.errors import QuickstudyError
from quickstudy.train import load_checkpoint, save_checkpoint
from quickstudy.train.checkpoint import CHECKPOINT_NAME, upgrade_checkpoint

KIND = "detector"


@dataclass(frozen=True)
class VersionInfo:
    number: int
    path: Path
    note: str
    classes: list[str]
    taxonomy_version: int | None
    created: str
    # how the network sees images: input size (long side), channels, tiles or whole letterboxed images
    input: dict[str, Any] = field(default_factory=dict)

    def listing(self, current: int) -> dict[str, Any]:
        """The version as `models list --json` and ``GET /api/models`` show it."""
        return {
            "version": self.number,
            "current": self.number == current,
            "classes": self.classes,
            "note": self.note,
            "taxonomy_version": self.taxonomy_version,
            "created": self.created,
            "input": self.input,
        }


class ModelFolder:
    """The versions of one detector on disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def _versions_dir(self) -> Path:
        return self.root / "versions"

    def path(self, number: int) -> Path:
        return self._versions_dir / f"v{number}.pt"

    def numbers(self) -> list[int]:
        if not self._versions_dir.is_dir():
            return []
        found = [p.stem[1:] for p in self._versions_dir.glob("v*.pt")]
        return sorted(int(n) for n in found if n.isdigit())

    def current(self) -> int:
        """The current version number; a clear error when the folder holds no model."""
        numbers = self.numbers()
        if not numbers:
            raise QuickstudyError(
                f"{self.root}: not a detector folder (no versions/v*.pt); run `quickstudy train`"
            )
        marker = self.root / "CURRENT"
        if marker.is_file():
            text = marker.read_text().strip()
            if text.isdigit() and int(text) in numbers:
                return int(text)
            raise QuickstudyError(f"{marker}: names version {text!r}, which is not in {self._versions_dir}")
        return numbers[-1]

    def use(self, number: int) -> None:
        """Make version ``number`` current."""
        if number not in self.numbers():
            raise QuickstudyError(f"{self.root}: no version {number} (have {self.numbers() or 'none'})")
        tmp = self.root / f".CURRENT.tmp-{os.getpid()}"
        tmp.write_text(f"{number}\n")
        os.replace(tmp, self.root / "CURRENT")

    def load(self, number: int | None = None) -> dict[str, Any]:
        """The checkpoint payload of version ``number`` (default: current)."""
        return load_checkpoint(self.path(self.current() if number is None else number), kind=KIND)

    def save(self, payload: dict[str, Any]) -> int:
        """Write ``payload`` as the next version and make it current; return its number."""
        number = max(self.numbers(), default=0) + 1
        save_checkpoint(self.path(number), {**payload, "kind": KIND, "version": number})
        self.use(number)
        return number

    def undo(self) -> int:
        """Make the version before the current one current; return its number."""
        earlier = [n for n in self.numbers() if n < self.current()]
        if not earlier:
            raise QuickstudyError(f"{self.root}: version {self.current()} is the first; nothing to undo")
        self.use(earlier[-1])
        return earlier[-1]

    def upgrade(self) -> list[Path]:
        """Re-save every version and the training checkpoint as plain data (see
        :func:`~quickstudy.train.checkpoint.upgrade_checkpoint`); only for a folder its owner trusts."""
        files = [self.path(n) for n in self.numbers()]
        if (self.root / CHECKPOINT_NAME).is_file():
            files.append(self.root / CHECKPOINT_NAME)
        if not files:
            raise QuickstudyError(f"{self.root}: not a detector folder (no versions/v*.pt)")
        return [upgrade_checkpoint(file) for file in files]

    def versions(self) -> list[VersionInfo]:
        infos = []
        for number in self.numbers():
            payload = self.load(number)
            infos.append(
                VersionInfo(
                    number,
                    self.path(number),
                    payload.get("note", ""),
                    list(payload["classes"]),
                    payload.get("taxonomy_version"),
                    payload.get("created", ""),
                    _input_geometry(payload.get("config", {})),
                )
            )
        return infos


def _input_geometry(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config's input geometry; configs saved before a field existed had its old value."""
    return {
        "image_size": config.get("image_size", 200),
        "channels": config.get("channels", 1),
        "tiling": bool(config.get("tiling", False)),
    }


def store_fingerprint(store: Any) -> dict[str, Any]:
    """What a model records of the store it was made from, so that :func:`check_taxonomy` can compare
    class identities rather than names: the store's UUID and each current class's immutable id."""
    return {"store_identity": store.identity(), "class_ids": dict(store.class_ids())}


def check_taxonomy(payload: dict[str, Any], store: Any, where: str | os.PathLike[str]) -> str | None:
    """Refuse a store in which a class this model names no longer means what it meant.

    On the store the model was made from, classes are compared by identity: a class split, merged,
    retired or renamed since (three renames can swap two names) is refused. On another store (a
    re-import, a copy elsewhere) only names can be compared; the returned one-line note says so. New
    classes in the store are fine: the model does not predict them until they are learned.
    """
    ids = payload.get("class_ids")
    if ids and payload.get("store_identity") == store.identity():
        current_names = {class_id: name for name, class_id in store.class_ids().items()}
        changed = []
        for name in payload["classes"]:
            if name not in ids:  # learned from images outside the store: nothing to compare
                continue
            now = store.current_class_ids(ids[name])
            if now != {ids[name]}:
                meaning = ", ".join(sorted(current_names[i] for i in now)) or "no class"
                changed.append(f"{name!r} (now {meaning})")
            elif current_names[ids[name]] != name:
                changed.append(f"{name!r} (renamed to {current_names[ids[name]]!r})")
        if changed:
            raise QuickstudyError(
                f"{where}: since this model was made (taxonomy version {payload.get('taxonomy_version')}), "
                f"the store changed {', '.join(changed)}; retrain (`quickstudy train`) or learn the "
                "classes as they are now (`quickstudy learn --class NAME --from-store`)"
            )
        return None
    current = set(store.classes())
    gone = [name for name in payload["classes"] if name not in current]
    if gone:
        raise QuickstudyError(
            f"{where}: the model was made at taxonomy version {payload.get('taxonomy_version')} and knows "
            f"{', '.join(repr(g) for g in gone)}, which the store (taxonomy version {store.taxonomy_version()}) "
            "no longer has; retrain (`quickstudy train`) or learn the new classes "
            "(`quickstudy learn --class NAME --from-store`)"
        )
    return (
        f"{where}: made from another store (or before stores had an identity), so its classes were matched "
        "by name only"
    )


def diff_versions(folder: ModelFolder, a: int, b: int) -> dict[str, Any]:
    """Classes added and removed from version ``a`` to ``b``, the cosine between old and new
    prototypes of common classes whose prototype moved, and the classes whose boxes come from the
    learned localization head in ``b`` but not in ``a`` (``localized``) or the other way round."""
    old, new = folder.load(a), folder.load(b)
    old_rows = dict(zip(old["classes"], F.normalize(old["model"]["prototypes"], dim=-1), strict=True))
    new_rows = dict(zip(new["classes"], F.normalize(new["model"]["prototypes"], dim=-1), strict=True))
    changed = {}
    for name in old_rows.keys() & new_rows.keys():
        if not torch.equal(old_rows[name], new_rows[name]):
            changed[name] = float(old_rows[name] @ new_rows[name])
    return {
        "added": [c for c in new["classes"] if c not in old_rows],
        "removed": [c for c in old["classes"] if c not in new_rows],
        "changed": changed,
        "localized": [c for c in new.get("learned_classes", []) if c not in old.get("learned_classes", [])],
        "unlocalized": [c for c in old.get("learned_classes", []) if c not in new.get("learned_classes", [])],
        "notes": {a: old.get("note", ""), b: new.get("note", "")},
    }
