"""Checked images (boxes complete; with none, defect-free) against images nobody has looked at yet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from quickstudy.cli import main
from quickstudy.labels import Store, schema
from quickstudy.labels.formats import import_mvtec, import_unlabelled

from .labels_fixtures import write_image


def test_a_v2_store_migrates_keeping_every_box_and_marks_its_images_checked(tmp_path: Path) -> None:
    path = tmp_path / "v2.qs"
    image = write_image(tmp_path / "a.png", (40, 30))
    with sqlite3.connect(path) as conn:
        schema.MIGRATIONS[0](conn)
        schema.MIGRATIONS[1](conn)
        conn.executescript(
            f"""
            INSERT INTO images (id, path, width, height, checksum, split) VALUES
                (1, '{image}', 40, 30, 'x', 'train'), (2, '{tmp_path / "b.png"}', 40, 30, 'y', 'train');
            INSERT INTO boxes (image_id, x1, y1, x2, y2, author, created) VALUES
                (1, 1, 2, 10, 12, 'ana', 't'), (1, 5, 5, 20, 25, 'ana', 't');
            PRAGMA user_version = 2;
            PRAGMA application_id = {schema.APPLICATION_ID};
            """
        )
        boxes = conn.execute("SELECT * FROM boxes ORDER BY id").fetchall()
    conn.close()
    with Store.open(path, create=False) as store:
        assert store._conn.execute("SELECT * FROM boxes ORDER BY id").fetchall() == boxes
        assert [s.checked for s in store.samples()] == [True, True]
        stats = store.stats()
        assert (stats["checked_images"], stats["defect_free_images"], stats["unlabelled_images"]) == (2, 1, 0)


def test_bare_images_are_unlabelled_until_marked_checked_and_undo_restores(tmp_path: Path) -> None:
    write_image(tmp_path / "line" / "a.png", (40, 30))
    write_image(tmp_path / "line" / "sub" / "b.jpg", (20, 20))
    with Store.open(tmp_path / "s.qs") as store:
        report = import_unlabelled(store, tmp_path / "line")
        assert report.images == 2
        assert [s.checked for s in store.samples()] == [False, False]
        assert store.stats()["unlabelled_images"] == 2 and store.stats()["defect_free_images"] == 0
        first = store.samples()[0].image_id
        store.set_checked([first])
        assert store.stats()["defect_free_images"] == 1
        assert store.history()[-1]["kind"] == "checked"
        store.undo()
        assert store.stats()["unlabelled_images"] == 2


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_mvtec_good_images_are_checked_defect_free_and_masks_become_boxes(tmp_path: Path) -> None:
    root = tmp_path / "bottle"
    _png(root / "train" / "good" / "000.png", np.full((16, 16), 90))
    _png(root / "test" / "crack" / "000.png", np.full((16, 16), 90))
    mask = np.zeros((16, 16))
    mask[4:8, 5:9] = 255
    mask[10:14, 10:14] = 255
    _png(root / "ground_truth" / "crack" / "000_mask.png", mask)
    with Store.open(tmp_path / "s.qs") as store:
        import_mvtec(store, root)
        stats = store.stats()
        assert stats["defect_free_images"] == 1 and stats["unlabelled_images"] == 0
        assert stats["per_class"] == {"crack": 2}
        assert stats["splits"] == {"test": {"images": 1, "boxes": 2}, "train": {"images": 1, "boxes": 0}}


def test_an_exif_turned_photo_is_stored_with_its_displayed_size(tmp_path: Path, capsys) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 x 40, displayed 40 x 60
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    with Store.open(tmp_path / "s.qs") as store:
        import_unlabelled(store, tmp_path)
        (image,) = store.images()
        assert (image.width, image.height) == (40, 60)
    assert main(["data", "stats", "--store", str(tmp_path / "s.qs"), "--json"]) == 0
    assert '"unlabelled_images": 1' in capsys.readouterr().out


def test_history_summarises_box_edits_in_a_few_words(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per edit
    write_image(tmp_path / "line" / "a.png", (40, 30))
    with Store.open(tmp_path / "s.qs") as store:
        import_unlabelled(store, tmp_path / "line")
        image_id = store.images()[0].image_id
        box = store.add_box(image_id, (1.0, 1.0, 10.0, 10.0))
        store.delete_box(box)
    assert main(["taxonomy", "history", "--store", str(tmp_path / "s.qs")]) == 0
    out = capsys.readouterr().out
    assert f"box {box} added on image {image_id}" in out and f"box {box} deleted on image {image_id}" in out
    assert "row=" not in out
