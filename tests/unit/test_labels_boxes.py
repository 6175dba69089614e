"""Box edits as store operations: journaled, undoable, validated as import validates, and refused
when made on a stale version of their image."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

import pytest

from quickstudy.cli import main
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store, schema
from quickstudy.labels.store import NotInStore, StaleEdit

from .labels_fixtures import small_store, snapshot, write_image


def version(store: Store, image_id: int) -> int:
    return store.image(image_id).image.version


def test_add_box_stores_it_with_author_and_label_raises_the_version_and_undo_removes_it(
    tmp_path: Path,
) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    assert version(store, 1) == 0
    box_id = store.add_box(1, (2, 3, 20, 25), "b", author="ana", expected_version=0)
    state = store.image(1)
    added = state.boxes[-1]
    assert (added.record.box_id, added.record.xyxy, added.record.author, added.allowed) == (
        box_id,
        (2.0, 3.0, 20.0, 25.0),
        "ana",
        frozenset({"b"}),
    )
    assert state.image.version == 1 and len(state.boxes) == 3
    edit = store.history()[-1]
    assert (edit["kind"], edit["author"], edit["payload"]["box_id"], edit["payload"]["image_id"]) == (
        "add_box",
        "ana",
        box_id,
        1,
    )
    assert store.undo()["kind"] == "add_box"
    assert snapshot(store) == before
    assert version(store, 1) == 2  # an undo is a change too: the version only ever grows


def test_a_box_may_have_no_class_or_a_partial_set_of_classes(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    plain = store.add_box(2, (0, 0, 40, 30), None)
    single = store.add_box(2, (1, 1, 5, 5), frozenset({"c"}))
    partial = store.add_box(2, (1, 1, 6, 6), frozenset({"a", "b"}))
    allowed = {shown.record.box_id: shown.allowed for shown in store.image(2).boxes}
    assert allowed[plain] == frozenset() and allowed[single] == {"c"} and allowed[partial] == {"a", "b"}
    assert store.boxes()[single - 1].class_id == store.class_ids()["c"]  # one name is the class itself
    with pytest.raises(QuickstudyError, match="no current class 'zebra'"):
        store.add_box(2, (1, 1, 5, 5), "zebra")


def test_update_box_moves_relabels_and_undo_restores_each(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    box = store.image(1).boxes[0].record
    before = snapshot(store)
    store.update_box(box.box_id, xyxy=(3, 4, 12, 14), author="ben", expected_version=0)
    moved = store.image(1).boxes[0]
    assert moved.record.xyxy == (3, 4, 12, 14) and moved.record.class_id == box.class_id
    assert moved.record.author == box.author  # the box's creator stays; the journal names the editor
    store.update_box(box.box_id, label=None, expected_version=1)
    assert store.image(1).boxes[0].allowed == frozenset()
    store.update_box(box.box_id, xyxy=(0, 0, 40, 30), label="c", expected_version=2)
    changed = store.image(1)
    assert (changed.boxes[0].record.xyxy, changed.boxes[0].allowed, changed.image.version) == (
        (0, 0, 40, 30),
        {"c"},
        3,
    )
    edit = store.history()[-1]
    assert edit["kind"] == "update_box" and edit["payload"]["old"]["box"] == [3, 4, 12, 14]
    for _ in range(3):
        assert store.undo()["kind"] == "update_box"
    assert snapshot(store) == before
    with pytest.raises(QuickstudyError, match="nothing to change"):
        store.update_box(box.box_id)


def test_set_label_is_a_box_edit_that_raises_the_version(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    box = store.image(3).boxes[0].record
    store.set_label(box.box_id, "a", expected_version=0)
    assert version(store, 3) == 1 and store.image(3).boxes[0].allowed == {"a"}
    with pytest.raises(StaleEdit):
        store.set_label(box.box_id, "b", expected_version=0)
    store.undo()
    assert store.image(3).boxes[0].record.class_id == box.class_id and version(store, 3) == 2


def test_delete_keeps_the_whole_row_in_the_journal_and_undo_restores_it_under_its_id(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    box = store.image(2).boxes[1].record
    before = snapshot(store)
    store.delete_box(box.box_id, author="cleo", expected_version=0)
    assert [b.record.box_id for b in store.image(2).boxes] == [box.box_id - 1]
    edit = store.history()[-1]
    assert edit["kind"] == "delete_box" and edit["author"] == "cleo"
    assert edit["payload"]["row"] == {
        "id": box.box_id,
        "image_id": 2,
        "x1": box.xyxy[0],
        "y1": box.xyxy[1],
        "x2": box.xyxy[2],
        "y2": box.xyxy[3],
        "author": box.author,
        "created": box.created,
        "class_id": box.class_id,
        "label_version": box.label_version,
    }
    store.undo()
    assert snapshot(store) == before  # the same id, author, time and label
    assert version(store, 2) == 2


def test_the_id_of_a_deleted_box_is_never_given_to_another_box(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    last = store.boxes()[-1].box_id
    store.delete_box(last)
    assert store.add_box(1, (1, 1, 5, 5)) == last + 1
    store.undo()
    store.undo()  # the deleted box is back under its id
    assert store.boxes()[-1].box_id == last
    assert store.add_box(1, (1, 1, 5, 5)) == last + 2


def test_a_stale_edit_is_refused_with_the_current_version_and_writes_nothing(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    box = store.image(1).boxes[0].record
    store.add_box(1, (1, 1, 5, 5), "a", expected_version=0)
    before, history = snapshot(store), store.history()
    edits = [
        lambda: store.add_box(1, (2, 2, 9, 9), "a", expected_version=0),
        lambda: store.update_box(box.box_id, xyxy=(2, 2, 9, 9), expected_version=0),
        lambda: store.delete_box(box.box_id, expected_version=0),
        lambda: store.set_checked([1], False, expected_version=0),
    ]
    for edit in edits:
        with pytest.raises(
            StaleEdit, match=r"image 1 is at version 1, not 0: it was changed since"
        ) as refused:
            edit()
        assert (refused.value.image_id, refused.value.current_version) == (1, 1)
    assert snapshot(store) == before and store.history() == history and version(store, 1) == 1
    store.update_box(box.box_id, xyxy=(2, 2, 9, 9), expected_version=1)  # made on the current version
    assert version(store, 1) == 2


@pytest.mark.parametrize(
    ("xyxy", "problem"),
    [
        ((5, 5, 5, 9), "has zero or negative area"),
        ((9, 5, 5, 9), "has zero or negative area"),
        ((math.nan, 1, 5, 5), "has zero or negative area"),
        ((5, 5, 41, 9), "lies outside the 40x30 image"),
        ((-1, 5, 10, 9), "lies outside the 40x30 image"),
        ((1, 1, 10, math.inf), "lies outside the 40x30 image"),
    ],
)
def test_a_box_outside_the_image_or_without_area_is_refused(tmp_path: Path, xyxy, problem: str) -> None:
    store = small_store(tmp_path)
    box = store.image(1).boxes[0].record
    before, history = snapshot(store), store.history()
    with pytest.raises(QuickstudyError, match=rf"labels\.qs: image 1: box .* {problem}"):
        store.add_box(1, xyxy, "a")
    with pytest.raises(QuickstudyError, match=problem):
        store.update_box(box.box_id, xyxy=xyxy)
    assert snapshot(store) == before and store.history() == history and version(store, 1) == 0
    store.add_box(1, (0, 0, 40, 30), "a")  # the whole image is inside it


def test_missing_images_and_boxes_are_named(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    with pytest.raises(NotInStore, match="no image with id 99"):
        store.add_box(99, (1, 1, 5, 5))
    with pytest.raises(NotInStore, match="no image with id 99"):
        store.image(99)
    for edit in (lambda: store.update_box(99, label="a"), lambda: store.delete_box(99)):
        with pytest.raises(NotInStore, match="no box with id 99"):
            edit()


def test_status_changes_raise_the_version_and_their_undo_too(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    store.set_checked([1], False, expected_version=0)
    assert (store.image(1).image.checked, version(store, 1)) == (False, 1)
    store.undo()
    assert (store.image(1).image.checked, version(store, 1)) == (True, 2)
    store.set_splits({1: "train", 2: "test", 3: "val"})  # image 1 was train already
    assert [version(store, i) for i in (1, 2, 3)] == [2, 1, 1]
    store.undo()
    assert [version(store, i) for i in (1, 2, 3)] == [2, 2, 2]
    with pytest.raises(ValueError, match="one image"):
        store.set_checked([1, 2], expected_version=2)


def test_a_taxonomy_change_keeps_versions_and_image_shows_the_new_meaning(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    store.taxonomy.split("a", ["a1", "a2"])
    state = store.image(1)
    assert state.boxes[0].allowed == {"a1", "a2"} and state.image.version == 0


def test_two_connections_editing_one_image_on_the_same_version_one_wins(tmp_path: Path) -> None:
    small_store(tmp_path).close()
    path = tmp_path / "labels.qs"
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def edit(x1: float) -> None:
        with Store.open(path, create=False) as store:
            box = store.image(1).boxes[0].record
            start.wait()
            try:
                store.update_box(box.box_id, xyxy=(x1, 1, 20, 20), author=f"at {x1}", expected_version=0)
                outcomes.append(x1)
            except StaleEdit as error:
                outcomes.append(error)

    threads = [threading.Thread(target=edit, args=(x1,)) for x1 in (2.0, 3.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wins = [o for o in outcomes if isinstance(o, float)]
    stale = [o for o in outcomes if isinstance(o, StaleEdit)]
    assert len(wins) == 1 and len(stale) == 1, outcomes
    assert stale[0].current_version == 1
    with Store.open(path, create=False) as store:
        assert store.image(1).boxes[0].record.xyxy[0] == wins[0] and version(store, 1) == 1


def test_a_v3_store_migrates_to_v4_keeping_every_box(tmp_path: Path) -> None:
    path = tmp_path / "v3.qs"
    image = write_image(tmp_path / "a.png", (40, 30))
    with sqlite3.connect(path) as conn:
        for migration in schema.MIGRATIONS[:3]:
            migration(conn)
        conn.executescript(
            f"""
            INSERT INTO classes (id, name, edit_id) VALUES (1, 'dent', 1);
            INSERT INTO edits (kind, payload, author, time) VALUES ('add', '{{}}', 'ana', 't');
            INSERT INTO images (id, path, width, height, checksum, split, checked) VALUES
                (1, '{image}', 40, 30, 'x', 'train', 1), (2, '{tmp_path / "b.png"}', 40, 30, 'y', NULL, 0);
            INSERT INTO boxes (id, image_id, x1, y1, x2, y2, author, created, class_id, label_version) VALUES
                (1, 1, 1, 2, 10, 12, 'ana', 't1', 1, 1), (2, 1, 5, 5, 20, 25, 'ana', 't2', NULL, NULL),
                (7, 2, 0.5, 0.5, 39.5, 29.5, 'ben', 't3', 1, 1);
            PRAGMA user_version = 3;
            PRAGMA application_id = {schema.APPLICATION_ID};
            """
        )
        boxes = conn.execute("SELECT * FROM boxes ORDER BY id").fetchall()
        images = conn.execute("SELECT * FROM images ORDER BY id").fetchall()
    conn.close()
    with Store.open(path, create=False) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert store._conn.execute("SELECT * FROM boxes ORDER BY id").fetchall() == boxes
        assert store._conn.execute("SELECT * FROM images ORDER BY id").fetchall() == [
            (*row, 0) for row in images
        ]
        assert [(s.record.box_id, s.allowed) for s in store.image(1).boxes] == [
            (1, {"dent"}),
            (2, frozenset()),
        ]
        store.delete_box(7)
        assert store.add_box(2, (1, 1, 5, 5)) == 8  # the deleted id is not given again


def test_data_check_marks_images_by_path_or_id_and_back_to_unlabelled(tmp_path: Path, capsys) -> None:
    small_store(tmp_path).close()
    store_path = str(tmp_path / "labels.qs")
    image = str(tmp_path / "img" / "im2.png")
    assert main(["data", "check", "--store", store_path, "--unlabelled", image, "4", "--author", "ida"]) == 0
    assert capsys.readouterr().out == f"2 images marked not yet labelled in {store_path}\n"
    with Store.open(store_path, create=False) as store:
        assert [s.checked for s in store.samples()] == [True, True, False, False, True, True]
        assert (store.history()[-1]["author"], version(store, 3), version(store, 1)) == ("ida", 1, 0)
    assert main(["data", "check", "--store", store_path, "3", image]) == 0  # one image, named twice
    assert capsys.readouterr().out == f"1 image marked checked in {store_path}\n"
    for missing in ("99", "nowhere.png"):
        assert main(["data", "check", "--store", store_path, "1", missing]) == 2
        assert capsys.readouterr().err == (
            f"error: {store_path}: no image {missing!r} in the store (give its path or id)\n"
        )
    with Store.open(store_path, create=False) as store:
        assert [s.checked for s in store.samples()] == [True, True, True, False, True, True]
        assert store.undo()["kind"] == "checked"
        assert store.samples()[2].checked is False
