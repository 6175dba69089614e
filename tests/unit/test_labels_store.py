"""The store: bad input gets a one-line error naming the file, and a failed import changes nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quickstudy.errors import QuickstudyError
from quickstudy.labels import ImportedBox, ImportedImage, Store, schema
from quickstudy.labels.formats import import_folder

from .labels_fixtures import small_store, snapshot, write_image


def one_image(tmp_path: Path, *boxes: ImportedBox, size=(40, 30), name="new.png") -> ImportedImage:
    return ImportedImage(write_image(tmp_path / name, size=size, seed=99), *size, list(boxes), source=name)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: one_image(p, ImportedBox((5, 5, 5, 9), "a")), "zero or negative area"),
        (lambda p: one_image(p, ImportedBox((5, 5, 50, 9), "a")), "outside the 40x30 image"),
        (lambda p: one_image(p, ImportedBox((1, 1, 9, 9), "zebra")), "unknown class 'zebra'"),
        (
            lambda p: ImportedImage(write_image(p / "w.png", (40, 30)), 41, 30, source="w.xml"),
            "declares size 41x30",
        ),
        (lambda p: ImportedImage(p / "missing.png", 40, 30, source="m.xml"), "cannot be read"),
    ],
)
def test_bad_input_is_refused_whole(tmp_path: Path, make, message: str) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    good = one_image(tmp_path, ImportedBox((1, 1, 9, 9), "a"), name="good.png")
    with pytest.raises(QuickstudyError, match=message):
        store.import_images([good, make(tmp_path)], source="test")
    assert snapshot(store) == before  # the good image did not land either


def test_corrupt_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    truncated = write_image(tmp_path / "trunc.png", (64, 64))
    truncated.write_bytes(truncated.read_bytes()[:60])
    for path in (corrupt, truncated):
        with pytest.raises(QuickstudyError, match=rf"{path.name}: not a readable image"):
            store.import_images([ImportedImage(path, 64, 64)], source="t")


def test_a_truncated_jpeg_is_refused_at_import(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 2 // 3])  # the header says 64x64
    with pytest.raises(QuickstudyError, match=r"cut\.jpg: not a readable image \(image file is truncated"):
        store.import_images([ImportedImage(cut, 64, 64)], source="t")
    assert snapshot(store) == before


@pytest.mark.parametrize("limit", [40 * 30 // 2 - 1, 40 * 30 - 1])  # PIL's error, then its warning
def test_a_decompression_bomb_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    bomb = write_image(tmp_path / "folders" / "dent" / "bomb.png", (40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # a 40x30 image stands in for a huge one
    message = r"bomb\.png: refused as a possible decompression bomb \(Image size \(1200 pixels\)"
    with pytest.raises(QuickstudyError, match=message):
        Store.open(tmp_path / "a.qs").import_images([ImportedImage(bomb, 40, 30)], source="t")
    with pytest.raises(QuickstudyError, match=message):
        import_folder(Store.open(tmp_path / "b.qs"), tmp_path / "folders")


def test_same_path_twice_is_refused_and_skip_invalid_reports(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    again = ImportedImage(
        tmp_path / "img" / "im0.png", 40, 30, [ImportedBox((1, 1, 5, 5), "a")], source="again.xml"
    )
    with pytest.raises(QuickstudyError, match="already in the store"):
        store.import_images([again], source="t")
    good = one_image(tmp_path, ImportedBox((1, 1, 9, 9), "b"))
    report = store.import_images([again, good], source="t", skip_invalid=True)
    assert report.images == 1 and len(report.skipped) == 1 and "again.xml" in report.skipped[0]


def test_byte_identical_images_are_kept_and_reported(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    copy = tmp_path / "copy.png"
    copy.write_bytes((tmp_path / "img" / "im0.png").read_bytes())
    report = store.import_images([ImportedImage(copy, 40, 30)], source="t")
    assert report.images == 1 and "im0.png" in report.same_content[0]


def test_not_a_store_and_newer_schema(tmp_path: Path) -> None:
    text = tmp_path / "notes.qs"
    text.write_text("hello")
    with pytest.raises(QuickstudyError, match="notes.qs: not a quickstudy label store"):
        Store.open(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(QuickstudyError, match="other.db: an SQLite file, but not a quickstudy label store"):
        Store.open(other)
    newer = tmp_path / "newer.qs"
    Store.open(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    with pytest.raises(QuickstudyError, match="newer quickstudy"):
        Store.open(newer)
    with pytest.raises(QuickstudyError, match="not found"):
        Store.open(tmp_path / "absent.qs", create=False)


def test_migration_path_from_every_older_version(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.qs")
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert len(schema.MIGRATIONS) == schema.SCHEMA_VERSION


_KILLED_WRITER = """
import os, sys
from quickstudy.labels import Store
store = Store.open(sys.argv[1])
with store.transaction():
    store.taxonomy.add("half-written")
    store._conn.execute("UPDATE boxes SET x1 = -1")
    os._exit(9)  # killed mid-transaction: no commit, no rollback, no cleanup
"""


def test_a_killed_process_leaves_the_last_committed_state(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    store.close()
    result = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "labels.qs")])
    assert result.returncode == 9
    reopened = Store.open(tmp_path / "labels.qs")
    assert snapshot(reopened) == before


def test_stats_counts(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    stats = store.stats()
    assert stats["images"] == 6 and stats["boxes"] == 12 and stats["boxes_without_class"] == 3
    assert sum(stats["per_class"].values()) == 9
    assert stats["splits"] == {"test": {"images": 2, "boxes": 4}, "train": {"images": 4, "boxes": 8}}
    json.dumps(stats)


def test_fraction_split_is_stratified_and_undoable(tmp_path: Path) -> None:
    store = small_store(tmp_path, n_images=30)
    before = snapshot(store)
    store.split_by_fraction(test=0.2, val=0.2, seed=3)
    splits = store.stats()["splits"]
    assert splits["test"]["images"] == 6 and splits["val"]["images"] == 6 and splits["train"]["images"] == 18
    store.undo()
    assert snapshot(store) == before


# -- a store a person cannot write to, a damaged store, and two processes at once -----------------------


def read_only_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open every store as SQLite opens a file without write permission (chmod does not bind root)."""
    connect = sqlite3.connect
    monkeypatch.setattr(
        sqlite3, "connect", lambda path, **options: connect(f"file:{path}?mode=ro", uri=True, **options)
    )


def test_a_read_only_store_is_read_and_any_write_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_store(tmp_path).close()
    read_only_connections(monkeypatch)
    store = Store.open(tmp_path / "labels.qs")
    assert store.stats()["boxes"] == 12
    writes = [
        lambda: store.taxonomy.add("d"),
        lambda: store.set_splits({1: "test"}),
        lambda: store.import_images([one_image(tmp_path, ImportedBox((1, 1, 9, 9), "a"))], source="t"),
    ]
    for write in writes:
        with pytest.raises(
            QuickstudyError, match=r"labels\.qs: the store is read-only and this command writes"
        ):
            write()


def damage_boxes_table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'boxes'").fetchone()[0]
    conn.close()
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\x5a" * page_size)


def test_a_damaged_store_is_not_written_and_reads_fail_in_one_line(tmp_path: Path) -> None:
    small_store(tmp_path).close()
    path = tmp_path / "labels.qs"
    damage_boxes_table(path)
    damaged = path.read_bytes()
    store = Store.open(path)
    with pytest.raises(QuickstudyError, match=r"labels\.qs: the store is damaged \(.*malformed"):
        store.stats()
    assert store.classes() == ["a", "b", "c"]  # what is intact still reads
    with pytest.raises(
        QuickstudyError, match=r"labels\.qs: the store is damaged \(quick_check: .*refusing to write"
    ):
        store.taxonomy.add("d")
    store.close()
    assert path.read_bytes() == damaged


_CREATE_AT_ONCE = """
import sys, time
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store
start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    Store.open(sys.argv[1]).close()
except QuickstudyError as error:
    print(error)
    sys.exit(2)
"""


def test_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "new.qs"
    start = str(time.time() + 1.5)  # every process waits for the same moment, past its imports
    processes = [
        subprocess.Popen([sys.executable, "-c", _CREATE_AT_ONCE, str(path), start], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    errors = [process.communicate()[1].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, errors
    with Store.open(path) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION


def test_concurrent_imports_of_the_same_images_refuse_the_second(tmp_path: Path) -> None:
    first = small_store(tmp_path)
    image = one_image(tmp_path, ImportedBox((1, 1, 9, 9), "a"))
    errors: list[BaseException] = []

    def import_second() -> None:
        try:
            with Store.open(tmp_path / "labels.qs") as second:
                second.import_images([image], source="second")
        except BaseException as error:
            errors.append(error)

    with first.transaction():
        first.import_images([image], source="first")
        thread = threading.Thread(target=import_second)
        thread.start()
        time.sleep(0.5)  # the second import reads the known paths, then waits for the write lock
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], QuickstudyError), errors
    assert "new.png is already in the store" in str(errors[0])
    assert first.stats()["images"] == 7


def test_an_empty_file_is_not_turned_into_a_store_by_a_reader(tmp_path: Path) -> None:
    empty = tmp_path / "empty.qs"
    empty.touch()
    with pytest.raises(QuickstudyError, match=r"empty\.qs: an empty file, not a label store"):
        Store.open(empty, create=False)
    assert empty.read_bytes() == b"" and not Path(f"{empty}-wal").exists()
    Store.open(empty).close()  # a writer (import) may make a store of it
    assert Store.open(empty, create=False).stats()["images"] == 0
