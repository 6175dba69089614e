"""What a person sees from `quickstudy data` and `quickstudy taxonomy`: one line and exit 2 for bad input
or a store that cannot be used, never a traceback; summaries instead of internal lists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quickstudy.cli import main

from .labels_fixtures import small_store, write_image
from .test_labels_formats import coco_file, yolo_root
from .test_labels_store import damage_boxes_table, read_only_connections


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def duplicate_image_ids(tmp_path: Path) -> list[str]:
    images = [
        {"id": 3, "file_name": "one.png", "width": 40, "height": 30},
        {"id": 3, "file_name": "two.png", "width": 40, "height": 30},
    ]
    path = coco_file(tmp_path, images=images, annotations=[])
    return ["data", "import", str(path), "--format", "coco", "--store", str(tmp_path / "s.qs")]


def deep_coco(tmp_path: Path) -> list[str]:
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return ["data", "import", str(path), "--format", "coco", "--store", str(tmp_path / "s.qs")]


def six_field_yolo_line(tmp_path: Path) -> list[str]:
    root = yolo_root(tmp_path, "0 0.5 0.5 0.2 0.2 0.7\n")
    return ["data", "import", str(root), "--format", "yolo", "--store", str(tmp_path / "s.qs")]


def truncated_jpeg(tmp_path: Path) -> list[str]:
    path = tmp_path / "folders" / "dent" / "cut.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    return [
        "data",
        "import",
        str(tmp_path / "folders"),
        "--format",
        "folder",
        "--store",
        str(tmp_path / "s.qs"),
    ]


def fractional_voc_width(tmp_path: Path) -> list[str]:
    write_image(tmp_path / "voc" / "JPEGImages" / "a.png", (200, 30))
    (tmp_path / "voc" / "Annotations").mkdir()
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>200.7</width><height>30</height></size></annotation>"
    )
    return ["data", "import", str(tmp_path / "voc"), "--format", "voc", "--store", str(tmp_path / "s.qs")]


def damaged_store(tmp_path: Path) -> list[str]:
    small_store(tmp_path).close()
    damage_boxes_table(tmp_path / "labels.qs")
    return ["data", "stats", "--store", str(tmp_path / "labels.qs")]


def damaged_store_import(tmp_path: Path) -> list[str]:
    small_store(tmp_path).close()
    damage_boxes_table(tmp_path / "labels.qs")
    write_image(tmp_path / "folders" / "a" / "new.png", (20, 20))
    return [
        "data",
        "import",
        str(tmp_path / "folders"),
        "--format",
        "folder",
        "--store",
        str(tmp_path / "labels.qs"),
    ]


def empty_store_file(tmp_path: Path) -> list[str]:
    (tmp_path / "empty.qs").touch()
    return ["taxonomy", "history", "--store", str(tmp_path / "empty.qs")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (duplicate_image_ids, r"coco\.json: image ids used more than once: 3$"),
        (deep_coco, r"deep\.json: JSON nested too deeply to read$"),
        (six_field_yolo_line, r"a\.txt:1: expected 'class cx cy w h' or a polygon"),
        (truncated_jpeg, r"cut\.jpg: not a readable image \(image file is truncated"),
        (fractional_voc_width, r"a\.xml: <width> must be a whole number, got '200\.7'$"),
        (damaged_store, r"labels\.qs: the store is damaged \(database disk image is malformed\)"),
        (damaged_store_import, r"labels\.qs: the store is damaged \(quick_check: .*refusing to write"),
        (empty_store_file, r"empty\.qs: an empty file, not a label store$"),
    ],
)
def test_each_problem_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], list[str]], message: str
) -> None:
    code, _, err = run(capsys, *make(tmp_path))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ")
    assert re.search(message, err.strip()), err


def test_a_read_only_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    small_store(tmp_path).close()
    read_only_connections(monkeypatch)
    store = str(tmp_path / "labels.qs")
    assert run(capsys, "taxonomy", "show", "--store", store)[0] == 0
    code, _, err = run(capsys, "taxonomy", "add", "dent", "--store", store)
    assert code == 2 and err.count("\n") == 1 and "labels.qs: the store is read-only" in err


def test_a_decompression_bomb_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "folders" / "dent" / "bomb.png", (40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    code, _, err = run(
        capsys,
        "data",
        "import",
        str(tmp_path / "folders"),
        "--format",
        "folder",
        "--store",
        str(tmp_path / "s.qs"),
    )
    assert code == 2 and err.count("\n") == 1 and "bomb.png: refused as a possible decompression bomb" in err


def test_import_says_how_many_boxes_came_from_polygons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = yolo_root(
        tmp_path, "0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.3 0.1 0.25 0.6\n1 0.5 0.5 0.6 0.6 0.5 0.7 0.4 0.6\n"
    )
    argv = ["data", "import", str(root), "--format", "yolo", "--store", str(tmp_path / "s.qs")]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "2 box(es) are the bounding boxes of polygons" in out
    code, out, _ = run(capsys, *argv[:-1], str(tmp_path / "t.qs"), "--json")
    assert json.loads(out)["boxes_from_polygons"] == 2


def test_history_summarises_a_splits_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = small_store(tmp_path, n_images=30)
    store.set_splits(
        {image.image_id: "test" if image.image_id % 5 == 0 else "train" for image in store.images()}
    )
    store.close()
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "taxonomy", "history", "--store", str(tmp_path / "labels.qs"))
    assert code == 0 and "30 images: 24 train, 6 test" in out
    assert "'1': " not in out and "old=" not in out  # no per-image list


def test_an_empty_store_file_stays_empty_after_a_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.qs"
    empty.touch()
    for argv in (
        ["data", "stats"],
        ["data", "export", str(tmp_path / "o.json"), "--format", "coco"],
        ["taxonomy", "show"],
    ):
        code, _, err = run(capsys, *argv, "--store", str(empty))
        assert code == 2 and "an empty file, not a label store" in err
    assert empty.read_bytes() == b""
