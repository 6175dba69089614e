"""A store's identity and its class ids: what a model compares to know its classes still mean the same."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from quickstudy.labels import Store, schema

from .labels_fixtures import small_store, write_image


def test_each_store_has_its_own_lasting_identity(tmp_path: Path) -> None:
    first = small_store(tmp_path / "one")
    identity = first.identity()
    assert str(uuid.UUID(identity)) == identity
    first.close()
    assert Store.open(tmp_path / "one" / "labels.qs").identity() == identity
    assert small_store(tmp_path / "two").identity() != identity  # a re-import is another store


def test_class_ids_follow_rename_split_merge_and_retire(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    ids = store.class_ids()
    assert list(ids) == ["a", "b", "c"]
    store.taxonomy.rename("a", "b_old")
    store.taxonomy.rename("b", "a")
    store.taxonomy.rename("b_old", "b")  # the names swapped; the ids did not
    assert store.class_ids() == {"b": ids["a"], "a": ids["b"], "c": ids["c"]}
    assert store.current_class_ids(ids["a"]) == {ids["a"]}
    parts = store.taxonomy.split("b", ["b1", "b2"])
    assert store.current_class_ids(ids["a"]) == frozenset(parts)
    merged = store.taxonomy.merge(["b1", "c"], "bc")
    assert store.current_class_ids(ids["a"]) == {merged, parts[1]}
    assert store.current_class_ids(ids["c"]) == {merged}
    store.taxonomy.retire("bc", "other-types")  # unnamed: old a may be an unnamed type, so {}
    assert store.current_class_ids(ids["c"]) == frozenset()
    assert store.current_class_ids(ids["a"]) == {parts[1]}


def test_a_class_id_freed_by_undo_is_never_given_again(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    added = store.taxonomy.add("dent")
    store.undo()
    assert store.current_class_ids(added) == frozenset()  # a model trained on it finds no class
    assert store.taxonomy.add("pit") == added + 1
    store.close()
    assert Store.open(tmp_path / "labels.qs").taxonomy.add("scratch") == added + 2


def test_a_v1_store_migrates_keeping_every_box_and_gets_an_identity(tmp_path: Path) -> None:
    path = tmp_path / "v1.qs"
    image = write_image(tmp_path / "a.png", (40, 30))
    with sqlite3.connect(path) as conn:
        schema.MIGRATIONS[0](conn)  # the v1 DDL, as quickstudy before schema 2 wrote it
        conn.executescript(
            f"""
            INSERT INTO edits (id, kind, payload, author, time) VALUES
                (1, 'import', '{{}}', 'ana', 't'), (2, 'add', '{{}}', 'ana', 't'),
                (3, 'add', '{{}}', 'ana', 't'), (4, 'retire', '{{}}', 'ana', 't');
            INSERT INTO classes (id, name, active, edit_id) VALUES (1, 'dent', 1, 2), (2, 'pit', 0, 3);
            INSERT INTO images (id, path, width, height, checksum, split) VALUES
                (1, '{image}', 40, 30, 'x', 'train');
            INSERT INTO boxes (image_id, x1, y1, x2, y2, author, created, class_id, label_version) VALUES
                (1, 1, 2, 10, 12, 'ana', 't', 1, 2), (1, 5, 5, 20, 25, 'ana', 't', 2, 3),
                (1, 3, 3, 9, 9, 'ana', 't', NULL, NULL);
            PRAGMA user_version = 1;
            PRAGMA application_id = {schema.APPLICATION_ID};
            """
        )
        boxes = conn.execute("SELECT * FROM boxes ORDER BY id").fetchall()
    conn.close()
    with Store.open(path, create=False) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert store._conn.execute("SELECT * FROM boxes ORDER BY id").fetchall() == boxes
        assert store.stats()["boxes"] == 3 and store.classes() == ["dent"]
        identity = store.identity()
        assert str(uuid.UUID(identity)) == identity
        assert store.class_ids() == {"dent": 1} and store.current_class_ids(2) == frozenset()
        assert store.taxonomy.add("scratch") == 3
    assert Store.open(path).identity() == identity
