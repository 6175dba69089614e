"""What retiring a class means for its boxes: ``unnamed`` (a type no class names: never named as
another) or ``other-types``; stored from schema 5 on, shown in the history, undone like any edit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from quickstudy.cli import main
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store, schema

from .labels_fixtures import small_store, write_image


def meanings(store: Store) -> dict[int, tuple[frozenset[str], bool]]:
    return {b.box_id: (b.allowed, b.unnamed) for s in store.samples() for b in s.boxes}


def c_boxes(store: Store) -> list[int]:
    return [b.box_id for s in store.samples() for b in s.boxes if b.allowed == {"c"}]


def test_retire_is_unnamed_by_default_and_other_types_on_request(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    of_c, of_b = c_boxes(store), [b.box_id for s in store.samples() for b in s.boxes if b.allowed == {"b"}]
    store.taxonomy.retire("c")
    after = meanings(store)
    assert {after[i] for i in of_c} == {(frozenset(), True)}
    assert not any(unnamed for _, unnamed in after.values() if _ != frozenset()) and after[of_b[0]] == (
        frozenset({"b"}),
        False,
    )
    shown = store.image(store.samples()[2].image_id).boxes  # image 2 holds a c box
    assert [s.unnamed for s in shown] == [s.record.box_id in of_c for s in shown]
    assert store.box(of_c[0]).unnamed
    store.taxonomy.retire("b", "other-types")
    assert {meanings(store)[i] for i in of_b} == {(frozenset(), False)}


def test_a_meaning_is_changed_by_retiring_again_and_undo_restores_each_step(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    of_c = c_boxes(store)
    store.taxonomy.retire("c", "other-types")
    store.taxonomy.retire("c", "unnamed")  # c is retired: only its meaning changes
    assert store.classes() == ["a", "b"] and meanings(store)[of_c[0]] == (frozenset(), True)
    assert store.history()[-1]["payload"]["previous"] == "other-types"
    with pytest.raises(QuickstudyError, match="already retired as unnamed"):
        store.taxonomy.retire("c", "unnamed")
    with pytest.raises(QuickstudyError, match="unknown retire meaning 'maybe'"):
        store.taxonomy.retire("a", "maybe")
    store.undo()
    assert store.classes() == ["a", "b"] and meanings(store)[of_c[0]] == (frozenset(), False)
    store.undo()
    assert store.classes() == ["a", "b", "c"] and meanings(store)[of_c[0]] == (frozenset({"c"}), False)
    store.taxonomy.retire("c", "other-types")  # back to a class retired fresh, with the meaning given
    assert meanings(store)[of_c[0]] == (frozenset(), False)


def test_a_label_that_may_mean_an_unnamed_type_is_known_to_be_nothing(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    store.taxonomy.split("a", ["a1", "a2"])
    old_a = [i for i, (allowed, _) in meanings(store).items() if allowed == {"a1", "a2"}]
    store.taxonomy.retire("a1", "other-types")
    assert {meanings(store)[i] for i in old_a} == {(frozenset({"a2"}), False)}
    store.taxonomy.retire("a1")
    # a2, or a type no class names: nothing is known of its class, and it is not known to be unnamed
    assert {meanings(store)[i] for i in old_a} == {(frozenset(), False)}
    of_b = [i for i, (allowed, _) in meanings(store).items() if allowed == {"b"}]
    store.taxonomy.merge(["a2", "b"], "ab")
    store.taxonomy.retire("ab")
    # every way out of old a and old b now ends in an unnamed type
    assert {meanings(store)[i] for i in old_a + of_b} == {(frozenset(), True)}


def test_a_v4_store_migrates_to_v5_keeping_every_box_and_old_retires_as_other_types(tmp_path: Path) -> None:
    path = tmp_path / "v4.qs"
    image = write_image(tmp_path / "a.png", (40, 30))
    with sqlite3.connect(path) as conn:
        for migration in schema.MIGRATIONS[:4]:
            migration(conn)
        conn.executescript(
            f"""
            UPDATE store_info SET value = '3' WHERE key = 'last_class_id';
            INSERT INTO classes (id, name, active, edit_id) VALUES (1, 'dent', 1, 1), (2, 'rust', 0, 2),
                (3, 'pit', 1, 3);
            INSERT INTO edits (kind, payload, author, time, undone) VALUES
                ('add', '{{"name": "dent", "class_id": 1}}', 'ana', 't', 0),
                ('add', '{{"name": "rust", "class_id": 2}}', 'ana', 't', 0),
                ('add', '{{"name": "pit", "class_id": 3}}', 'ana', 't', 0),
                ('retire', '{{"name": "rust", "class_id": 2}}', 'ana', 't', 0),
                ('retire', '{{"name": "pit", "class_id": 3}}', 'ana', 't', 1);
            INSERT INTO images (id, path, width, height, checksum, split, checked, version) VALUES
                (1, '{image}', 40, 30, 'x', 'train', 1, 3);
            INSERT INTO boxes (id, image_id, x1, y1, x2, y2, author, created, class_id, label_version) VALUES
                (1, 1, 1, 2, 10, 12, 'ana', 't1', 1, 1), (2, 1, 5, 5, 20, 25, 'ana', 't2', 2, 2),
                (9, 1, 0.5, 0.5, 39.5, 29.5, 'ben', 't3', NULL, NULL), (10, 1, 2, 2, 9, 9, 'ben', 't4', 3, 3);
            PRAGMA user_version = 4;
            PRAGMA application_id = {schema.APPLICATION_ID};
            """
        )
        boxes = conn.execute("SELECT * FROM boxes ORDER BY id").fetchall()
    conn.close()
    with Store.open(path, create=False) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 5
        assert store._conn.execute("SELECT * FROM boxes ORDER BY id").fetchall() == boxes
        assert meanings(store) == {
            1: (frozenset({"dent"}), False),
            2: (frozenset(), False),  # retired before schema 5: of the other types, as it was trained
            9: (frozenset(), False),
            10: (frozenset({"pit"}), False),  # its retire was undone
        }
        assert [e["payload"].get("meaning") for e in store.history() if e["kind"] == "retire"] == [
            "other-types",
            "other-types",
        ]
        store.taxonomy.retire("rust", "unnamed")
        assert meanings(store)[2] == (frozenset(), True)
        store.undo()
        store.undo()  # the migrated retire itself: rust is a class again
        assert meanings(store)[2] == (frozenset({"rust"}), False)


def test_retire_meaning_through_the_cli(tmp_path: Path, capsys) -> None:
    small_store(tmp_path).close()
    path = str(tmp_path / "labels.qs")
    assert main(["taxonomy", "retire", "c", "--store", path]) == 0
    assert "never named as another class" in capsys.readouterr().out
    assert main(["taxonomy", "retire", "b", "--meaning", "other-types", "--store", path]) == 0
    assert main(["taxonomy", "retire", "c", "--meaning", "other-types", "--store", path]) == 0
    capsys.readouterr()
    with Store.open(path, create=False) as store:
        assert {(allowed, unnamed) for allowed, unnamed in meanings(store).values()} == {
            (frozenset({"a"}), False),
            (frozenset(), False),
        }
    assert main(["taxonomy", "undo", "--store", path]) == 0
    with Store.open(path, create=False) as store:
        assert (frozenset(), True) in set(meanings(store).values())  # c is unnamed again
    capsys.readouterr()
    assert main(["taxonomy", "history", "--store", path]) == 0
    history = capsys.readouterr().out
    assert "c (unnamed)" in history and "b (other-types)" in history and "c (other-types, was" in history
    assert main(["taxonomy", "history", "--json", "--store", path]) == 0
    retires = [e for e in json.loads(capsys.readouterr().out) if e["kind"] == "retire"]
    assert [(e["payload"]["meaning"], e["undone"]) for e in retires] == [
        ("unnamed", False),
        ("other-types", False),
        ("other-types", True),
    ]


def test_a_bad_meaning_is_an_argparse_error_and_changes_nothing(tmp_path: Path, capsys) -> None:
    small_store(tmp_path).close()
    path = str(tmp_path / "labels.qs")
    with pytest.raises(SystemExit) as exit_info:
        main(["taxonomy", "retire", "c", "--meaning", "gone", "--store", path])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gone'" in capsys.readouterr().err
    with Store.open(path, create=False) as store:
        assert store.classes() == ["a", "b", "c"]


def test_a_store_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    small_store(tmp_path).close()
    path = tmp_path / "labels.qs"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    assert main(["taxonomy", "retire", "c", "--store", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by a newer quickstudy (store schema 6" in err
