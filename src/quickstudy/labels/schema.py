"""The SQLite schema of a label store, and the path from any older schema version to the current one.

``MIGRATIONS[n]`` takes a store from schema version ``n`` to ``n + 1``; version 0 is an empty file.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable

APPLICATION_ID = 0x51534C42  # "QSLB": marks the file as a quickstudy label store (PRAGMA application_id)


_V1 = """
        CREATE TABLE classes (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            edit_id INTEGER NOT NULL               -- the edit that created it
        );
        CREATE UNIQUE INDEX classes_active_name ON classes(name) WHERE active = 1;
        CREATE TABLE successors (                  -- what an inactive class may now mean
            class_id INTEGER NOT NULL REFERENCES classes(id),
            successor_id INTEGER NOT NULL REFERENCES classes(id),
            edit_id INTEGER NOT NULL,
            PRIMARY KEY (class_id, successor_id)
        );
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            checksum TEXT NOT NULL,
            split TEXT
        );
        CREATE INDEX images_checksum ON images(checksum);
        CREATE TABLE boxes (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            author TEXT NOT NULL,
            created TEXT NOT NULL,
            class_id INTEGER REFERENCES classes(id),   -- NULL: a box without class
            label_version INTEGER                      -- taxonomy version the label was written in
        );
        CREATE INDEX boxes_image ON boxes(image_id);
        CREATE TABLE edits (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            author TEXT NOT NULL,
            time TEXT NOT NULL,
            undone INTEGER NOT NULL DEFAULT 0
        );
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _add_store_info(conn: sqlite3.Connection) -> None:
    """v2: ``store_info`` holds the store's identity (a UUID, fresh for a store made before v2) and the
    highest class id ever given, so that an id freed by an undo is never given to another class."""
    conn.execute("CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO store_info (key, value) VALUES ('identity', ?)", (str(uuid.uuid4()),))
    conn.execute(
        "INSERT INTO store_info (key, value) SELECT 'last_class_id', coalesce(max(id), 0) FROM classes"
    )


def _add_image_checked(conn: sqlite3.Connection) -> None:
    """v3: ``images.checked`` — 1: a person (or the dataset) says the image's boxes are complete, so with
    no box it is a defect-free part; 0: nobody has looked yet. Images stored before were imported
    from annotation files, so they are checked."""
    conn.execute("ALTER TABLE images ADD COLUMN checked INTEGER NOT NULL DEFAULT 1")


def _add_image_version(conn: sqlite3.Connection) -> None:
    """v4: ``images.version``, raised by every change to the image's boxes or status, so that an edit
    made on an older view of the image is refused instead of overwriting the newer one; ``boxes``
    becomes AUTOINCREMENT, so that the id of a deleted box is never given to another box (an undo
    restores the box under its id, and a client holding the id never edits a stranger)."""
    conn.execute("ALTER TABLE images ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        """
        CREATE TABLE boxes_v4 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id),
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            author TEXT NOT NULL,
            created TEXT NOT NULL,
            class_id INTEGER REFERENCES classes(id),
            label_version INTEGER
        )"""
    )
    conn.execute(
        "INSERT INTO boxes_v4 (id, image_id, x1, y1, x2, y2, author, created, class_id, label_version) "
        "SELECT id, image_id, x1, y1, x2, y2, author, created, class_id, label_version FROM boxes"
    )
    conn.execute("DROP TABLE boxes")
    conn.execute("ALTER TABLE boxes_v4 RENAME TO boxes")
    conn.execute("CREATE INDEX boxes_image ON boxes(image_id)")


def _add_retired_meaning(conn: sqlite3.Connection) -> None:
    """v5: ``classes.retired`` — what retiring the class means for its boxes: ``unnamed`` (a type the
    taxonomy does not name: never to be named as another class) or ``other-types`` (they are of the
    other current classes); NULL for a class not retired. Retires made before are ``other-types``
    and their journal entries say so: that is what their authors got (training may pseudo-label them)."""
    conn.execute("ALTER TABLE classes ADD COLUMN retired TEXT")
    # retired: inactive and meaning nothing (a merged, split or legacy class has successors)
    conn.execute(
        "UPDATE classes SET retired = 'other-types' WHERE active = 0 "
        "AND id NOT IN (SELECT class_id FROM successors)"
    )
    for edit_id, payload in conn.execute("SELECT id, payload FROM edits WHERE kind = 'retire'").fetchall():
        conn.execute(
            "UPDATE edits SET payload = ? WHERE id = ?",
            (json.dumps({**json.loads(payload), "meaning": "other-types"}), edit_id),
        )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _create_v1,
    _add_store_info,
    _add_image_checked,
    _add_image_version,
    _add_retired_meaning,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Apply every migration from ``from_version`` up to :data:`SCHEMA_VERSION` (the caller holds the
    transaction, so a failed migration leaves the file as it was)."""
    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
