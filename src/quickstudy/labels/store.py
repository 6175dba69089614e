"""The label store: one SQLite file (WAL, every edit one transaction, journaled with author and time).

>>> store = Store.open("labels.qs")  # doctest: +SKIP
>>> import_voc(store, "neu-det")  # doctest: +SKIP
>>> store.taxonomy.split("inclusion", ["inclusion_small", "inclusion_large"])  # doctest: +SKIP
>>> store.samples("train")[0].boxes[0].allowed  # doctest: +SKIP
frozenset({'inclusion_small', 'inclusion_large'})
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import hashlib
import json
import os
import random
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quickstudy.errors import QuickstudyError
from quickstudy.labels import schema
from quickstudy.labels.images import decoded_size
from quickstudy.labels.records import (
    BoxRecord,
    ImageRecord,
    ImageState,
    ImportedImage,
    LabelledBox,
    Sample,
    ShownBox,
)
from quickstudy.labels.taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
BOX_COLUMNS = ("id", "image_id", "x1", "y1", "x2", "y2", "author", "created", "class_id", "label_version")

# A box's label as callers give it: a class name, a set of class names (partial label), or None (no class).
Label = str | frozenset[str] | None


class Unchanged(enum.Enum):
    """For :meth:`Store.update_box`: keep the box's label as it is."""

    LABEL = enum.auto()


class NotInStore(QuickstudyError):
    """An image or box id the store does not hold (never held, or deleted since)."""

    def __init__(self, path: Path, kind: str, record_id: int) -> None:
        super().__init__(f"{path}: no {kind} with id {record_id}")
        self.kind = kind
        self.record_id = record_id


class InvalidBox(QuickstudyError):
    """A box that cannot lie on its image: outside it, or without area."""


class StaleEdit(QuickstudyError):
    """An edit made on another version of an image than its current one: someone changed the image's
    boxes or status meanwhile. Nothing was written; ``current_version`` is the image's version now."""

    def __init__(self, path: Path, image_id: int, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"{path}: image {image_id} is at version {current_version}, not {expected_version}: it was "
            "changed since; reload it and edit again"
        )
        self.image_id = image_id
        self.expected_version = expected_version
        self.current_version = current_version


def default_author() -> str:
    try:
        return os.environ.get("QUICKSTUDY_AUTHOR") or getpass.getuser()
    except (KeyError, OSError):
        return "quickstudy"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_split(split: object, where: str) -> None:
    """Refuse a split other than one of :data:`SPLITS` or ``None`` (untagged), in one line."""
    if split is not None and split not in SPLITS:
        raise QuickstudyError(f"{where}: unknown split {split!r} (use {', '.join(SPLITS)})")


_BUSY_SECONDS = 30
_RECOVER = "restore a copy, or recover it with `sqlite3 {path} .recover`"
# SQLite failures a person can act on; any other SQLite error is a quickstudy bug and keeps its traceback.
_STORE_PROBLEMS = {
    "SQLITE_READONLY": "the store is read-only and this command writes to it ({error})",
    "SQLITE_BUSY": f"another process has held the store for {_BUSY_SECONDS} s ({{error}}); try again when it is done",
    "SQLITE_LOCKED": "the store is locked by another connection ({error})",
    "SQLITE_CORRUPT": "the store is damaged ({error}); " + _RECOVER,
    "SQLITE_NOTADB": "not a label store ({error})",
    "SQLITE_FULL": "the disk is full ({error})",
    "SQLITE_IOERR": "the store cannot be read or written ({error})",
    "SQLITE_CANTOPEN": "the store cannot be opened ({error}): SQLite must read it and create its -wal and "
    "-shm files beside it",
    "SQLITE_PERM": "no permission to use the store ({error})",
}


def _store_problem(path: Path, error: sqlite3.DatabaseError) -> Exception:
    """A :class:`QuickstudyError` for a failure in :data:`_STORE_PROBLEMS`, else ``error`` itself."""
    code = (getattr(error, "sqlite_errorname", "") or "").split("_")
    problem = _STORE_PROBLEMS.get("_".join(code[:2]))
    if problem is None:
        return error
    return QuickstudyError(f"{path}: " + problem.format(path=path, error=error))


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite failures a person can act on become one-line errors naming the store."""

    connection: _Connection

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as error:
            raise _store_problem(self.connection.store_path, error) from None

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as error:
            raise _store_problem(self.connection.store_path, error) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as error:
            raise _store_problem(self.connection.store_path, error) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as error:
            raise _store_problem(self.connection.store_path, error) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as error:
            raise _store_problem(self.connection.store_path, error) from None


class _Connection(sqlite3.Connection):
    """The store's connection: every statement runs on a :class:`_Cursor`."""

    store_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self.cursor(_Cursor).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self.cursor(_Cursor).executemany(sql, parameters)


def _header(conn: _Connection) -> tuple[int, int, int]:
    """Schema version, application id and number of tables, read in one statement (one snapshot)."""
    row = conn.execute(
        "SELECT (SELECT user_version FROM pragma_user_version), "
        "(SELECT application_id FROM pragma_application_id), "
        "(SELECT count(*) FROM sqlite_master WHERE type = 'table')"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _check_header(path: Path, header: tuple[int, int, int]) -> None:
    version, app, tables = header
    if (version == 0 and tables > 0) or (version > 0 and app != schema.APPLICATION_ID):
        raise QuickstudyError(f"{path}: an SQLite file, but not a quickstudy label store")
    if version > schema.SCHEMA_VERSION:
        raise QuickstudyError(
            f"{path}: written by a newer quickstudy (store schema {version}, this version reads up to "
            f"{schema.SCHEMA_VERSION}); upgrade quickstudy"
        )


@dataclass
class ImportReport:
    """What an import did: counts, and what it skipped (only when asked to skip bad input)."""

    images: int = 0
    boxes: int = 0
    unlabelled_boxes: int = 0
    boxes_from_polygons: int = 0  # the bounding boxes of polygons (YOLO segmentation lines)
    classes_added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    same_content: list[str] = field(default_factory=list)  # imported, but byte-identical to another image


def box_problem(xyxy: tuple[float, float, float, float], width: int, height: int) -> str | None:
    """Why a box cannot be stored on a ``width`` x ``height`` image, or ``None`` when it can."""
    x1, y1, x2, y2 = xyxy
    if not (x2 > x1 and y2 > y1):  # also refuses NaN, for which every comparison is false
        return "has zero or negative area"
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return f"lies outside the {width}x{height} image"
    return None


def _label_names(label: Label) -> frozenset[str]:
    if label is None:
        return frozenset()
    return frozenset([label]) if isinstance(label, str) else label


_IMAGE_COLUMNS = "id, path, width, height, checksum, split, checked, version"


def _edit(row: tuple[Any, ...]) -> dict[str, Any]:
    edit_id, kind, payload, author, time, undone = row
    return {
        "id": edit_id,
        "kind": kind,
        "payload": json.loads(payload),
        "author": author,
        "time": time,
        "undone": bool(undone),
    }


def _xyxy(row: dict[str, Any]) -> tuple[float, float, float, float]:
    return row["x1"], row["y1"], row["x2"], row["y2"]


def _image_record(row: tuple[Any, ...]) -> ImageRecord:
    return ImageRecord(row[0], Path(row[1]), row[2], row[3], row[4], row[5], bool(row[6]), row[7])


def _box_record(row: tuple[Any, ...]) -> BoxRecord:
    return BoxRecord(row[0], row[1], (row[2], row[3], row[4], row[5]), row[6], row[7], row[8], row[9])


def _shown(box: BoxRecord, resolution: dict[int, frozenset[str]], unnamed: frozenset[int]) -> ShownBox:
    if box.class_id is None:
        return ShownBox(box, frozenset())
    return ShownBox(box, resolution[box.class_id], box.class_id in unnamed)


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process creates the same file: SQLite answers "locked" at
    once here, without waiting for its busy timeout."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:  # the plain sqlite3 call: the store's connection turns "locked" into a QuickstudyError
            sqlite3.Connection.execute(conn, "PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    """A label store in one SQLite file; created when missing.

    Reads are plain queries; every change goes through :meth:`transaction` and is journaled in
    ``edits`` (see :meth:`history`, :meth:`undo`). A killed process leaves the last committed state.
    """

    def __init__(self, path: Path, conn: _Connection) -> None:
        self.path = path
        self._conn = conn
        self._checked_for_writing = False
        self.taxonomy = Taxonomy(self)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], create: bool = True) -> Store:
        """Open the store at ``path``; with ``create`` (for commands that write) a missing or empty file
        becomes a new store, without it (for commands that read) it is refused. An older schema is
        upgraded on opening."""
        path = Path(path)
        if path.exists() and path.is_dir():
            raise QuickstudyError(f"{path}: is a folder, not a label store file")
        if not create and not path.exists():
            raise QuickstudyError(f"{path}: label store not found (create one with `quickstudy data import`)")
        if not create and path.stat().st_size == 0:
            raise QuickstudyError(f"{path}: an empty file, not a label store")
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise QuickstudyError(f"{path}: not a quickstudy label store (not an SQLite file)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_SECONDS, factory=_Connection)
        except sqlite3.DatabaseError as error:
            raise _store_problem(path, error) from None
        conn.store_path = path
        try:
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            header = _header(conn)
            _check_header(path, header)
            if not create and header[0] == 0:
                raise QuickstudyError(f"{path}: an empty SQLite file, not a label store")
            store = cls(path, conn)
            if header[0] < schema.SCHEMA_VERSION:
                with store.transaction():
                    # Again under the write lock: another process may have created or upgraded it meanwhile.
                    header = _header(conn)
                    _check_header(path, header)
                    if header[0] < schema.SCHEMA_VERSION:
                        schema.migrate(conn, header[0])
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: commits on success, rolls back on any exception (nested calls join).

        The first write of this process checks the store (``PRAGMA quick_check``) and refuses to write
        to a damaged one.
        """
        if self._conn.in_transaction:
            yield self._conn
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._checked_for_writing:
                self._refuse_damaged()
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Reads that all see one state of the store (a read transaction; joins a caller's transaction)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def _refuse_damaged(self) -> None:
        try:  # on the plain connection: a check that cannot even run is one more finding
            problems = [row[0] for row in sqlite3.Connection.execute(self._conn, "PRAGMA quick_check")]
        except sqlite3.DatabaseError as error:
            problems = [str(error)]
        if problems != ["ok"]:
            first = " ".join(problems[0].split())
            raise QuickstudyError(
                f"{self.path}: the store is damaged (quick_check: {first}); refusing to write to it: "
                + _RECOVER.format(path=self.path)
            )
        self._checked_for_writing = True

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        self._conn.row_factory = sqlite3.Row
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        finally:
            self._conn.row_factory = None

    def last_edit(self) -> dict[str, Any]:
        """The latest journal entry, as :meth:`history` gives it (call it inside the transaction that
        wrote the edit, so that it is that edit and not a later one of another connection)."""
        row = self._conn.execute(
            "SELECT id, kind, payload, author, time, undone FROM edits ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise QuickstudyError(f"{self.path}: no edit yet")
        return _edit(row)

    def journal(self, kind: str, payload: dict[str, Any], author: str | None = None) -> int:
        """Record an edit (inside the caller's transaction); returns its id."""
        cursor = self._conn.execute(
            "INSERT INTO edits (kind, payload, author, time) VALUES (?, ?, ?, ?)",
            (kind, json.dumps(payload), author or default_author(), now()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # -- reading ---------------------------------------------------------------------------------

    def classes(self) -> list[str]:
        """Current class names, in the order they were created."""
        return self.taxonomy.classes()

    def taxonomy_version(self) -> int:
        return self.taxonomy.version()

    def identity(self) -> str:
        """This store's UUID: written when the store was created (or upgraded to schema 2), never changed.

        Class ids are comparable between a model and a store only when the identities match; a
        re-import is another store. A file copy keeps the identity, so copies edited apart from each
        other may give the same new class id to different classes.
        """
        return str(self._conn.execute("SELECT value FROM store_info WHERE key = 'identity'").fetchone()[0])

    def class_ids(self) -> dict[str, int]:
        """Current class name -> its class id, in creation order.

        A class id never changes and is never given to another class of this store (a rename keeps
        the id; a split, merge or retire deactivates it and records its successors).
        """
        return self.taxonomy.class_ids()

    def current_class_ids(self, class_id: int) -> frozenset[int]:
        """The current class ids that ``class_id`` of this store, recorded at any time, resolves to.

        ``{class_id}`` while the class is current (even if renamed); its successors after a split
        (several) or merge (one); the empty set after a retire, or when the edit that created it was
        undone (an id this store never gave also resolves to the empty set).
        """
        return self.taxonomy.resolution_ids().get(class_id, frozenset())

    def images(self, split: str | None = None) -> list[ImageRecord]:
        rows = self._conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images" + (" WHERE split = ?" if split else "") + " ORDER BY id",
            (split,) if split else (),
        ).fetchall()
        return [_image_record(row) for row in rows]

    def boxes(self) -> list[BoxRecord]:
        rows = self._conn.execute(f"SELECT {', '.join(BOX_COLUMNS)} FROM boxes ORDER BY id").fetchall()
        return [_box_record(row) for row in rows]

    def image(self, image_id: int) -> ImageState:
        """One image with its version and its boxes, each with what its label means now; read in one
        transaction, so the boxes are those of that version."""
        with self._snapshot():
            row = self._conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
            ).fetchone()
            if row is None:
                raise NotInStore(self.path, "image", image_id)
            rows = self._conn.execute(
                f"SELECT {', '.join(BOX_COLUMNS)} FROM boxes WHERE image_id = ? ORDER BY id", (image_id,)
            ).fetchall()
            resolution = self.taxonomy.resolution()
            unnamed = self.taxonomy.unnamed_ids()
        boxes = [_box_record(r) for r in rows]
        return ImageState(_image_record(row), [_shown(b, resolution, unnamed) for b in boxes])

    def box(self, box_id: int) -> ShownBox:
        """One box, with what its label means now."""
        with self._snapshot():
            box = _box_record(tuple(self._box_row(box_id).values()))
            return _shown(box, self.taxonomy.resolution(), self.taxonomy.unnamed_ids())

    def samples(self, split: str | None = None) -> list[Sample]:
        """Every image (of ``split``) with its boxes and each box's allowed set of current classes.

        Training must use only ``checked`` samples as negatives: an unchecked image may hold defects
        nobody has marked yet."""
        resolution = self.taxonomy.resolution()
        unnamed = self.taxonomy.unnamed_ids()
        boxes: dict[int, list[LabelledBox]] = defaultdict(list)
        for box_id, image_id, x1, y1, x2, y2, class_id in self._conn.execute(
            "SELECT b.id, b.image_id, b.x1, b.y1, b.x2, b.y2, b.class_id FROM boxes b"
            + (" JOIN images i ON i.id = b.image_id WHERE i.split = ?" if split else "")
            + " ORDER BY b.id",
            (split,) if split else (),
        ):
            allowed = resolution[class_id] if class_id is not None else frozenset()
            boxes[image_id].append(LabelledBox(box_id, (x1, y1, x2, y2), allowed, class_id in unnamed))
        return [
            Sample(
                image.image_id,
                image.path,
                image.width,
                image.height,
                image.split,
                boxes[image.image_id],
                image.checked,
            )
            for image in self.images(split)
        ]

    def stats(self) -> dict[str, Any]:
        """Counts a person asks for first: images, boxes, boxes without class, per class, per split."""
        resolution = self.taxonomy.resolution()
        per_class: Counter[str] = Counter({name: 0 for name in self.classes()})
        label_sets: Counter[str] = Counter()
        unlabelled = 0
        no_current_class = 0
        for (class_id,) in self._conn.execute("SELECT class_id FROM boxes"):
            if class_id is None:
                unlabelled += 1
                continue
            allowed = resolution[class_id]
            if len(allowed) == 1:
                per_class[next(iter(allowed))] += 1
            elif allowed:
                label_sets[" | ".join(sorted(allowed))] += 1
            else:
                no_current_class += 1
        splits = {
            split or "untagged": {"images": n_images, "boxes": n_boxes}
            for split, n_images, n_boxes in self._conn.execute(
                "SELECT i.split, count(DISTINCT i.id), count(b.id) FROM images i "
                "LEFT JOIN boxes b ON b.image_id = i.id GROUP BY i.split ORDER BY i.split"
            )
        }
        n_images, n_boxes, n_checked, n_defect_free = self._conn.execute(
            "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM boxes),"
            " (SELECT count(*) FROM images WHERE checked = 1),"
            " (SELECT count(*) FROM images i WHERE checked = 1"
            "  AND NOT EXISTS (SELECT 1 FROM boxes b WHERE b.image_id = i.id))"
        ).fetchone()
        return {
            "store": str(self.path),
            "taxonomy_version": self.taxonomy_version(),
            "images": n_images,
            "boxes": n_boxes,
            "checked_images": n_checked,
            "defect_free_images": n_defect_free,
            "unlabelled_images": n_images - n_checked,
            "boxes_without_class": unlabelled,
            "boxes_of_retired_classes": no_current_class,
            "per_class": dict(per_class),
            "partial_label_sets": dict(label_sets),
            "splits": splits,
        }

    # -- writing ---------------------------------------------------------------------------------

    def import_images(
        self,
        images: list[ImportedImage],
        *,
        source: str,
        author: str | None = None,
        add_classes: bool | None = None,
        skip_invalid: bool = False,
    ) -> ImportReport:
        """Add images and their boxes in one transaction: either all valid input lands, or nothing.

        Bad input (unreadable or truncated image, size mismatch, unknown split, box outside the image
        or of zero area, unknown class, an image path already in the store) raises
        :class:`QuickstudyError` naming the file; with ``skip_invalid`` the bad image is left out and
        listed in the report instead. Class names not in the taxonomy are added when the store has no
        classes yet or ``add_classes`` is true.
        """
        report = ImportReport()
        author = author or default_author()
        with self.transaction():
            # Read under the write lock, so that a concurrent import of the same images is refused here.
            known_paths = {row[0] for row in self._conn.execute("SELECT path FROM images")}
            known_sums = {row[0]: row[1] for row in self._conn.execute("SELECT checksum, path FROM images")}
            current = set(self.classes())
            may_add = add_classes if add_classes is not None else not current
            self.journal("import", {"source": source, "images": len(images)}, author)
            if may_add:  # in sorted order, so that a dataset's class ids do not depend on file order
                incoming = {
                    name for image in images for box in image.boxes for name in _label_names(box.label)
                }
                for name in sorted(incoming - current):
                    self.taxonomy.add(name, author=author)
                    report.classes_added.append(name)
                    current.add(name)
            label_ids: dict[str | frozenset[str], int] = {}
            for image in images:
                try:
                    path, checksum = self._check_image(image, known_paths)
                    names = {name for box in image.boxes for name in _label_names(box.label)}
                    missing = sorted(names - current)
                    if missing:
                        raise QuickstudyError(
                            f"{image.source or image.path}: unknown class {missing[0]!r} "
                            f"(taxonomy has {', '.join(sorted(current)) or 'no classes'}; "
                            "pass --add-classes to add it)"
                        )
                except QuickstudyError as error:
                    if not skip_invalid:
                        raise
                    report.skipped.append(str(error))
                    continue
                if checksum in known_sums:
                    # Kept, not refused: datasets do hold such pairs (NEU-DET: patches_101 = patches_105),
                    # each with its own boxes; the report names them so a person can check for leakage.
                    report.same_content.append(f"{path} = {known_sums[checksum]}")
                cursor = self._conn.execute(
                    "INSERT INTO images (path, width, height, checksum, split, checked) VALUES (?, ?, ?, ?, ?, ?)",
                    (str(path), image.width, image.height, checksum, image.split, int(image.checked)),
                )
                image_id = cursor.lastrowid
                known_paths.add(str(path))
                known_sums[checksum] = str(path)
                stamp = now()
                for box in image.boxes:
                    class_id = None
                    if box.label is not None:
                        if box.label not in label_ids:
                            label_ids[box.label] = (
                                self.taxonomy.legacy_class(box.label, author)
                                if isinstance(box.label, frozenset)
                                else self.taxonomy.class_id(box.label)
                            )
                        class_id = label_ids[box.label]
                    version = self.taxonomy_version() if class_id is not None else None
                    self._conn.execute(
                        "INSERT INTO boxes (image_id, x1, y1, x2, y2, author, created, class_id, label_version)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (image_id, *box.xyxy, author, stamp, class_id, version),
                    )
                    report.boxes += 1
                    report.unlabelled_boxes += box.label is None
                    report.boxes_from_polygons += box.from_polygon
                report.images += 1
        return report

    def _check_image(self, image: ImportedImage, known_paths: set[str]) -> tuple[Path, str]:
        where = image.source or str(image.path)
        path = image.path.resolve()
        try:
            data = path.read_bytes()
        except OSError as error:
            raise QuickstudyError(f"{where}: image {image.path} cannot be read ({error.strerror})") from None
        width, height = decoded_size(image.path, data)
        if (image.width, image.height) != (width, height):
            raise QuickstudyError(
                f"{where}: declares size {image.width}x{image.height}, but {image.path.name} is {width}x{height}"
            )
        check_split(image.split, where)
        checksum = hashlib.sha1(data).hexdigest()
        if str(path) in known_paths:
            raise QuickstudyError(f"{where}: image {path} is already in the store")
        for number, box in enumerate(image.boxes, start=1):
            problem = box_problem(box.xyxy, width, height)
            if problem:
                raise QuickstudyError(f"{where}: box {number} {box.xyxy} {problem}")
        return path, checksum

    # -- boxes: each edit raises its image's version and, given the version it was made on, refuses a
    # stale one (StaleEdit) instead of overwriting what another person wrote meanwhile

    def _edit_image(self, image_id: int, expected_version: int | None) -> None:
        """Inside a write transaction: refuse an edit made on another version of the image than its
        current one, then raise the image's version."""
        row = self._conn.execute("SELECT version FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotInStore(self.path, "image", image_id)
        if expected_version is not None and expected_version != row[0]:
            raise StaleEdit(self.path, image_id, expected_version, row[0])
        self._conn.execute("UPDATE images SET version = version + 1 WHERE id = ?", (image_id,))

    def _box_row(self, box_id: int) -> dict[str, Any]:
        row = self._conn.execute(
            f"SELECT {', '.join(BOX_COLUMNS)} FROM boxes WHERE id = ?", (box_id,)
        ).fetchone()
        if row is None:
            raise NotInStore(self.path, "box", box_id)
        return dict(zip(BOX_COLUMNS, row, strict=True))

    def _checked_box(self, image_id: int, xyxy: Iterable[float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        width, height = self._conn.execute(
            "SELECT width, height FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        problem = box_problem((x1, y1, x2, y2), width, height)
        if problem:
            raise InvalidBox(f"{self.path}: image {image_id}: box {[x1, y1, x2, y2]} {problem}")
        return x1, y1, x2, y2

    def _label_ids(self, label: Label, author: str | None) -> tuple[int | None, int | None]:
        """``(class_id, label_version)`` for a label: a current class, an inactive class meaning
        exactly a set of current classes (as an import of partial labels writes), or none."""
        names = _label_names(label)
        if not names:
            return None, None
        if len(names) == 1:
            class_id = self.taxonomy.class_id(next(iter(names)))
        else:
            class_id = self.taxonomy.legacy_class(names, author)
        return class_id, self.taxonomy_version()

    def add_box(
        self,
        image_id: int,
        xyxy: Iterable[float],
        label: Label = None,
        author: str | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Add a box (inside the image, positive area) with a class, a set of classes or none;
        journaled and undoable. Returns its id, which no other box is ever given."""
        author = author or default_author()
        with self.transaction():
            self._edit_image(image_id, expected_version)
            box = self._checked_box(image_id, xyxy)
            class_id, label_version = self._label_ids(label, author)
            cursor = self._conn.execute(
                "INSERT INTO boxes (image_id, x1, y1, x2, y2, author, created, class_id, label_version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image_id, *box, author, now(), class_id, label_version),
            )
            assert cursor.lastrowid is not None
            row = self._box_row(cursor.lastrowid)
            self.journal("add_box", {"box_id": row["id"], "image_id": image_id, "row": row}, author)
        return int(row["id"])

    def update_box(
        self,
        box_id: int,
        xyxy: Iterable[float] | None = None,
        label: Label | Unchanged = Unchanged.LABEL,
        author: str | None = None,
        expected_version: int | None = None,
    ) -> None:
        """Move or resize a box (``xyxy``), relabel it (``label``: a class, a set of classes, or
        ``None`` for no class), or both; journaled and undoable."""
        if xyxy is None and label is Unchanged.LABEL:
            raise QuickstudyError(f"{self.path}: box {box_id}: nothing to change (give a box or a label)")
        author = author or default_author()
        with self.transaction():
            old = self._box_row(box_id)
            image_id = old["image_id"]
            self._edit_image(image_id, expected_version)
            box = _xyxy(old) if xyxy is None else self._checked_box(image_id, xyxy)
            class_id, label_version = (
                (old["class_id"], old["label_version"])
                if label is Unchanged.LABEL
                else self._label_ids(label, author)
            )
            self._conn.execute(
                "UPDATE boxes SET x1 = ?, y1 = ?, x2 = ?, y2 = ?, class_id = ?, label_version = ? WHERE id = ?",
                (*box, class_id, label_version, box_id),
            )
            new = {"box": list(box), "class_id": class_id, "label_version": label_version}
            before = {
                "box": list(_xyxy(old)),
                "class_id": old["class_id"],
                "label_version": old["label_version"],
            }
            self.journal(
                "update_box", {"box_id": box_id, "image_id": image_id, "old": before, "new": new}, author
            )

    def delete_box(self, box_id: int, author: str | None = None, expected_version: int | None = None) -> None:
        """Delete a box; the journal keeps its whole row, so that undo restores it under its id."""
        with self.transaction():
            row = self._box_row(box_id)
            self._edit_image(row["image_id"], expected_version)
            self._conn.execute("DELETE FROM boxes WHERE id = ?", (box_id,))
            self.journal("delete_box", {"box_id": box_id, "image_id": row["image_id"], "row": row}, author)

    def set_label(
        self, box_id: int, label: Label, author: str | None = None, expected_version: int | None = None
    ) -> None:
        """Label a box with a current class, a set of them, or none; journaled and undoable."""
        self.update_box(box_id, label=label, author=author, expected_version=expected_version)

    def set_splits(self, splits: dict[int, str | None], author: str | None = None, reason: str = "") -> None:
        """Tag images with a split (``train``, ``val``, ``test``); journaled and undoable. Raises the
        version of each image whose split changes."""
        for split in splits.values():
            check_split(split, str(self.path))
        with self.transaction():
            old = dict(self._conn.execute("SELECT id, split FROM images"))
            self._conn.executemany(
                "UPDATE images SET split = ?, version = version + (split IS NOT ?) WHERE id = ?",
                [(s, s, i) for i, s in splits.items()],
            )
            changed = {str(i): old.get(i) for i in splits}
            counts = Counter(split or "untagged" for split in splits.values())
            self.journal("splits", {"reason": reason, "old": changed, "new_counts": dict(counts)}, author)

    def set_checked(
        self,
        image_ids: list[int],
        checked: bool = True,
        author: str | None = None,
        expected_version: int | None = None,
    ) -> None:
        """Mark images checked (their boxes are complete; with none, defect-free) or back to not looked
        at; journaled and undoable. ``expected_version`` (for one image) refuses a stale mark."""
        if expected_version is not None and len(image_ids) != 1:
            raise ValueError("expected_version is the version of one image; give one image id")
        with self.transaction():
            old = {}
            for image_id in image_ids:
                self._edit_image(image_id, expected_version)
                old[str(image_id)] = self._conn.execute(
                    "SELECT checked FROM images WHERE id = ?", (image_id,)
                ).fetchone()[0]
            self._conn.executemany(
                "UPDATE images SET checked = ? WHERE id = ?", [(int(checked), i) for i in image_ids]
            )
            self.journal("checked", {"old": old, "checked": checked}, author)

    def split_by_fraction(
        self, test: float, val: float = 0.0, seed: int = 0, author: str | None = None
    ) -> None:
        """Stratified random split: within each image's main class, ``test`` and ``val`` fractions."""
        if not (0 <= test < 1 and 0 <= val < 1 and test + val < 1):
            raise QuickstudyError(f"{self.path}: split fractions must be in [0, 1) and sum below 1")
        by_class: dict[str, list[int]] = defaultdict(list)
        for sample in self.samples():
            names = Counter(name for box in sample.boxes for name in box.allowed)
            by_class[names.most_common(1)[0][0] if names else ""].append(sample.image_id)
        rng = random.Random(seed)
        splits: dict[int, str | None] = {}
        for ids in by_class.values():
            rng.shuffle(ids)
            n_test, n_val = round(len(ids) * test), round(len(ids) * val)
            for position, image_id in enumerate(ids):
                splits[image_id] = (
                    "test" if position < n_test else "val" if position < n_test + n_val else "train"
                )
        self.set_splits(splits, author, reason=f"fraction test={test} val={val} seed={seed}")

    # -- history ---------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Every edit, oldest first: id, kind, what it did, author, time, whether it was undone."""
        return [
            _edit(row)
            for row in self._conn.execute(
                "SELECT id, kind, payload, author, time, undone FROM edits ORDER BY id"
            )
        ]

    def undo(self, author: str | None = None) -> dict[str, Any]:
        """Undo the most recent edit not yet undone (repeat to go further back); returns it.

        Imports are not undone (that would delete boxes); an edit whose classes later labels use is
        refused with what to do first.
        """
        with self.transaction():
            row = self._conn.execute(
                "SELECT id, kind, payload FROM edits WHERE undone = 0 AND kind != 'undo' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise QuickstudyError(f"{self.path}: nothing to undo")
            edit_id, kind, payload_text = row
            payload = json.loads(payload_text)
            if kind in ("add_box", "update_box", "delete_box", "label"):
                self._reverse_box_edit(kind, payload)
            elif kind == "splits":
                self._conn.executemany(
                    "UPDATE images SET split = ?, version = version + (split IS NOT ?) WHERE id = ?",
                    [(s, s, int(i)) for i, s in payload["old"].items()],
                )
            elif kind == "checked":
                self._conn.executemany(
                    "UPDATE images SET checked = ?, version = version + 1 WHERE id = ?",
                    [(value, int(i)) for i, value in payload["old"].items()],
                )
            elif kind == "import":
                raise QuickstudyError(
                    f"{self.path}: the last edit is an import (edit {edit_id}); imports are not undone, "
                    "since that would delete boxes"
                )
            else:
                self.taxonomy.reverse(edit_id, kind, payload)
            self._conn.execute("UPDATE edits SET undone = 1 WHERE id = ?", (edit_id,))
            self.journal("undo", {"edit": edit_id, "kind": kind}, author)
        return {"id": edit_id, "kind": kind, "payload": payload}

    def _reverse_box_edit(self, kind: str, payload: dict[str, Any]) -> None:
        """Undo a box edit (inside :meth:`undo`'s transaction); raises the image's version, which only
        ever grows, so that an edit made before the undo is refused as stale."""
        box_id = payload["box_id"]
        if kind == "add_box":
            image_id = self._box_row(box_id)["image_id"]
            self._conn.execute("DELETE FROM boxes WHERE id = ?", (box_id,))
        elif kind == "delete_box":
            row = payload["row"]
            image_id = row["image_id"]
            self._conn.execute(
                f"INSERT INTO boxes ({', '.join(BOX_COLUMNS)}) VALUES ({', '.join('?' * len(BOX_COLUMNS))})",
                [row[column] for column in BOX_COLUMNS],
            )
        elif kind == "update_box":
            old = payload["old"]
            image_id = self._box_row(box_id)["image_id"]
            self._conn.execute(
                "UPDATE boxes SET x1 = ?, y1 = ?, x2 = ?, y2 = ?, class_id = ?, label_version = ? WHERE id = ?",
                (*old["box"], old["class_id"], old["label_version"], box_id),
            )
        else:  # "label": a relabel journaled before boxes had versions (schema 3)
            class_id, label_version = payload["old"]
            image_id = self._box_row(box_id)["image_id"]
            self._conn.execute(
                "UPDATE boxes SET class_id = ?, label_version = ? WHERE id = ?",
                (class_id, label_version, box_id),
            )
        self._edit_image(image_id, None)
