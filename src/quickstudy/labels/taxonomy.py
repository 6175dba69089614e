"""Class definitions that change over time without losing a box.

A class is a row with an immutable id. ``split``, ``merge`` and ``retire`` deactivate classes and
record *successor* edges; a stored label keeps pointing at the class it was written with, and
:meth:`Taxonomy.resolve` follows the edges to the set of current classes it may now mean:

- ``split A -> A1, A2``: an old ``A`` resolves to ``{A1, A2}`` until someone relabels the box;
- ``merge A, B -> C``: old ``A`` and ``B`` resolve to ``{C}``;
- ``retire A``: old ``A`` resolves to the empty set (the box stays); the retirement says what its
  boxes are: ``unnamed`` (the default), a type the taxonomy does not name (yet), so they are never
  to be named as another class, or ``other-types``, they are of the other current classes;
- ``rename``: only the name changes.

A label that may mean a current class or an ``unnamed`` retired one (``split A -> A1, A2``, then
``retire A1``) resolves to the empty set: nothing is known of its class.

The taxonomy version is the number of taxonomy edits in force (undo lowers it again).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from quickstudy.errors import QuickstudyError

if TYPE_CHECKING:
    from quickstudy.labels.store import Store

TAXONOMY_KINDS = ("add", "rename", "merge", "split", "retire", "legacy")
# What retiring a class means for its boxes; the first is the default: a wrong guess there costs a few
# pseudo-labels, a wrong guess the other way teaches a known class another type's boxes.
RETIRE_MEANINGS = ("unnamed", "other-types")
_FORBIDDEN = set("|,\n\r\t")


def check_class_name(name: str, where: str) -> str:
    if not name or name != name.strip() or _FORBIDDEN & set(name):
        raise QuickstudyError(f"{where}: invalid class name {name!r} (non-empty, no '|', ',' or edge spaces)")
    return name


class Taxonomy:
    """The class definitions of one :class:`~quickstudy.labels.store.Store`; every change is one
    journaled transaction."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- reading ---------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._store._conn.execute(sql, params).fetchall()

    def classes(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM classes WHERE active = 1 ORDER BY id")]

    def version(self) -> int:
        marks = ",".join("?" * len(TAXONOMY_KINDS))
        return int(
            self._rows(f"SELECT count(*) FROM edits WHERE undone = 0 AND kind IN ({marks})", TAXONOMY_KINDS)[
                0
            ][0]
        )

    def class_id(self, name: str) -> int:
        """The id of the current class called ``name``."""
        rows = self._rows("SELECT id FROM classes WHERE active = 1 AND name = ?", (name,))
        if not rows:
            current = ", ".join(self.classes()) or "no classes"
            raise QuickstudyError(f"{self._store.path}: no current class {name!r} (taxonomy has {current})")
        return int(rows[0][0])

    def class_ids(self) -> dict[str, int]:
        """Current class name -> its immutable id, in creation order."""
        return {
            name: int(i)
            for i, name in self._rows("SELECT id, name FROM classes WHERE active = 1 ORDER BY id")
        }

    def _resolved(self) -> dict[int, tuple[frozenset[int], bool]]:
        """For every class id: the current class ids it may mean, and whether it may mean a type
        retired as ``unnamed``."""
        rows = self._rows("SELECT id, active, retired FROM classes")
        active = {i for i, a, _ in rows if a}
        unnamed = {i for i, a, retired in rows if not a and retired == "unnamed"}
        edges: dict[int, list[int]] = defaultdict(list)
        for source, target in self._rows("SELECT class_id, successor_id FROM successors"):
            edges[source].append(target)
        memo: dict[int, tuple[frozenset[int], bool]] = {}

        def resolve(class_id: int) -> tuple[frozenset[int], bool]:
            if class_id not in memo:
                if class_id in active:
                    memo[class_id] = frozenset({class_id}), False
                else:
                    parts = [resolve(t) for t in edges[class_id]]
                    memo[class_id] = (
                        frozenset().union(*(ids for ids, _ in parts)),
                        class_id in unnamed or any(flag for _, flag in parts),
                    )
            return memo[class_id]

        return {class_id: resolve(class_id) for class_id, _, _ in rows}

    def resolution_ids(self) -> dict[int, frozenset[int]]:
        """For every class id in the store, the set of current class ids it resolves to."""
        return {i: frozenset() if unnamed else ids for i, (ids, unnamed) in self._resolved().items()}

    def unnamed_ids(self) -> frozenset[int]:
        """The class ids whose labels are known to be of a type no current class names: they resolve
        only to classes retired as ``unnamed``."""
        return frozenset(i for i, (ids, unnamed) in self._resolved().items() if unnamed and not ids)

    def resolution(self) -> dict[int, frozenset[str]]:
        """For every class id in the store, the set of current class names it resolves to."""
        names = {i: name for name, i in self.class_ids().items()}
        return {i: frozenset(names[t] for t in targets) for i, targets in self.resolution_ids().items()}

    def resolve(self, class_id: int) -> frozenset[str]:
        """The set of current classes a label written as ``class_id`` may mean now."""
        resolution = self.resolution()
        if class_id not in resolution:
            raise QuickstudyError(f"{self._store.path}: no class with id {class_id}")
        return resolution[class_id]

    def parents(self) -> dict[str, str]:
        """Current class -> the class it was split from (for COCO ``supercategory``)."""
        rows = self._rows(
            "SELECT c.name, p.name FROM successors s JOIN classes c ON c.id = s.successor_id "
            "JOIN classes p ON p.id = s.class_id JOIN edits e ON e.id = s.edit_id "
            "WHERE c.active = 1 AND e.kind = 'split'"
        )
        return dict(rows)

    def history(self) -> list[dict[str, Any]]:
        return [edit for edit in self._store.history() if edit["kind"] in TAXONOMY_KINDS]

    # -- editing ---------------------------------------------------------------------------------

    def _new_class(self, name: str, edit_id: int, active: bool = True) -> int:
        # Past the highest id ever given: an undo deletes classes, and their ids must not come back.
        class_id = int(self._rows("SELECT value FROM store_info WHERE key = 'last_class_id'")[0][0]) + 1
        self._store._conn.execute(
            "INSERT INTO classes (id, name, active, edit_id) VALUES (?, ?, ?, ?)",
            (class_id, name, int(active), edit_id),
        )
        self._store._conn.execute(
            "UPDATE store_info SET value = ? WHERE key = 'last_class_id'", (str(class_id),)
        )
        return class_id

    def _require_new_names(self, names: list[str], freed: set[str]) -> None:
        where = str(self._store.path)
        for name in names:
            check_class_name(name, where)
        if len(set(names)) != len(names):
            raise QuickstudyError(f"{where}: new class names repeat: {', '.join(names)}")
        taken = (set(self.classes()) - freed) & set(names)
        if taken:
            raise QuickstudyError(f"{where}: class {sorted(taken)[0]!r} already exists")

    def add(self, name: str, author: str | None = None) -> int:
        with self._store.transaction():
            self._require_new_names([name], set())
            edit_id = self._store.journal("add", {"name": name}, author)
            class_id = self._new_class(name, edit_id)
            self._set_payload(edit_id, {"name": name, "class_id": class_id})
        return class_id

    def rename(self, old: str, new: str, author: str | None = None) -> None:
        with self._store.transaction():
            class_id = self.class_id(old)
            self._require_new_names([new], {old})
            self._store._conn.execute("UPDATE classes SET name = ? WHERE id = ?", (new, class_id))
            self._store.journal("rename", {"class_id": class_id, "old": old, "new": new}, author)

    def merge(self, sources: list[str], target: str, author: str | None = None) -> int:
        """``merge A, B -> C``: labels of A and B now mean C (C may reuse one of their names)."""
        with self._store.transaction():
            if len(sources) < 2 or len(set(sources)) != len(sources):
                raise QuickstudyError(f"{self._store.path}: merge needs two or more different classes")
            source_ids = [self.class_id(s) for s in sources]
            self._require_new_names([target], set(sources))
            edit_id = self._store.journal("merge", {}, author)
            self._deactivate(source_ids)
            target_id = self._new_class(target, edit_id)
            self._link(source_ids, [target_id], edit_id)
            self._set_payload(
                edit_id,
                {"sources": sources, "source_ids": source_ids, "target": target, "target_id": target_id},
            )
        return target_id

    def split(self, source: str, targets: list[str], author: str | None = None) -> list[int]:
        """``split A -> A1, A2``: old labels of A now mean {A1, A2} until relabelled."""
        with self._store.transaction():
            if len(targets) < 2:
                raise QuickstudyError(f"{self._store.path}: split needs two or more new classes")
            source_id = self.class_id(source)
            self._require_new_names(targets, {source})
            edit_id = self._store.journal("split", {}, author)
            self._deactivate([source_id])
            target_ids = [self._new_class(t, edit_id) for t in targets]
            self._link([source_id], target_ids, edit_id)
            self._set_payload(
                edit_id,
                {"source": source, "source_id": source_id, "targets": targets, "target_ids": target_ids},
            )
        return target_ids

    def retire(self, name: str, meaning: str = RETIRE_MEANINGS[0], author: str | None = None) -> None:
        """Old labels of ``name`` resolve to no class; the boxes stay. ``meaning`` (one of
        :data:`RETIRE_MEANINGS`) says what they are; retiring a class retired before changes only
        that (undo restores the previous meaning)."""
        if meaning not in RETIRE_MEANINGS:
            raise QuickstudyError(
                f"{self._store.path}: unknown retire meaning {meaning!r} (use {', '.join(RETIRE_MEANINGS)})"
            )
        with self._store.transaction():
            payload: dict[str, Any] = {"name": name, "meaning": meaning}
            if name in self.classes():
                class_id = self.class_id(name)
                self._deactivate([class_id])
            else:
                rows = self._rows(
                    "SELECT id, retired FROM classes WHERE active = 0 AND retired IS NOT NULL AND name = ? "
                    "ORDER BY id DESC LIMIT 1",
                    (name,),
                )
                if not rows:
                    self.class_id(name)  # raises: no such class
                class_id, previous = rows[0]
                if previous == meaning:
                    raise QuickstudyError(
                        f"{self._store.path}: class {name!r} is already retired as {meaning}"
                    )
                payload["previous"] = previous
            self._store._conn.execute("UPDATE classes SET retired = ? WHERE id = ?", (meaning, class_id))
            self._store.journal("retire", {**payload, "class_id": class_id}, author)

    def legacy_class(self, allowed: frozenset[str], author: str | None = None) -> int:
        """An inactive class meaning exactly ``allowed`` (current classes), for importing partial labels."""
        with self._store.transaction():
            target_ids = sorted(self.class_id(name) for name in allowed)
            for (class_id,) in self._rows("SELECT id FROM classes WHERE active = 0"):
                linked = sorted(
                    t
                    for (t,) in self._rows(
                        "SELECT successor_id FROM successors WHERE class_id = ?", (class_id,)
                    )
                )
                if linked == target_ids and self.resolve(class_id) == allowed:
                    return int(class_id)
            name = " | ".join(sorted(allowed))
            edit_id = self._store.journal("legacy", {}, author)
            class_id = self._new_class(name, edit_id, active=False)
            self._link([class_id], target_ids, edit_id)
            self._set_payload(edit_id, {"name": name, "class_id": class_id, "target_ids": target_ids})
        return class_id

    # -- undo --------------------------------------------------------------------------------------

    def reverse(self, edit_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Reverse a taxonomy edit (called by :meth:`Store.undo` inside its transaction)."""
        conn = self._store._conn
        created = [i for (i,) in self._rows("SELECT id FROM classes WHERE edit_id = ?", (edit_id,))]
        if kind == "rename":
            if payload["old"] in self.classes():
                raise QuickstudyError(
                    f"{self._store.path}: cannot undo rename: {payload['old']!r} is taken again"
                )
            conn.execute("UPDATE classes SET name = ? WHERE id = ?", (payload["old"], payload["class_id"]))
            return
        if kind == "retire":
            if "previous" in payload:  # a change of meaning: the class stays retired
                conn.execute(
                    "UPDATE classes SET retired = ? WHERE id = ?", (payload["previous"], payload["class_id"])
                )
            else:
                self._reactivate([payload["class_id"]])
                conn.execute("UPDATE classes SET retired = NULL WHERE id = ?", (payload["class_id"],))
            return
        for class_id in created:
            used = self._rows("SELECT count(*) FROM boxes WHERE class_id = ?", (class_id,))[0][0]
            if used:
                name = self._rows("SELECT name FROM classes WHERE id = ?", (class_id,))[0][0]
                raise QuickstudyError(
                    f"{self._store.path}: cannot undo {kind}: {used} box label(s) use class {name!r} "
                    "created by it; undo or change those labels first"
                )
            if self._rows(
                "SELECT count(*) FROM successors WHERE class_id = ? AND edit_id != ?", (class_id, edit_id)
            )[0][0]:
                raise QuickstudyError(f"{self._store.path}: cannot undo {kind}: a later edit builds on it")
        conn.execute("DELETE FROM successors WHERE edit_id = ?", (edit_id,))
        conn.executemany("DELETE FROM classes WHERE id = ?", [(i,) for i in created])
        if kind == "merge":
            self._reactivate(payload["source_ids"])
        elif kind == "split":
            self._reactivate([payload["source_id"]])

    # -- helpers -----------------------------------------------------------------------------------

    def _deactivate(self, class_ids: list[int]) -> None:
        self._store._conn.executemany("UPDATE classes SET active = 0 WHERE id = ?", [(i,) for i in class_ids])

    def _reactivate(self, class_ids: list[int]) -> None:
        for class_id in class_ids:
            name = self._rows("SELECT name FROM classes WHERE id = ?", (class_id,))[0][0]
            if name in self.classes():
                raise QuickstudyError(f"{self._store.path}: cannot undo: class name {name!r} is taken again")
            self._store._conn.execute("UPDATE classes SET active = 1 WHERE id = ?", (class_id,))

    def _link(self, sources: list[int], targets: list[int], edit_id: int) -> None:
        self._store._conn.executemany(
            "INSERT INTO successors (class_id, successor_id, edit_id) VALUES (?, ?, ?)",
            [(s, t, edit_id) for s in sources for t in targets],
        )

    def _set_payload(self, edit_id: int, payload: dict[str, Any]) -> None:
        self._store._conn.execute("UPDATE edits SET payload = ? WHERE id = ?", (json.dumps(payload), edit_id))
