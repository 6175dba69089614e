"""VOC, COCO, YOLO and folder formats: round trips keep every box and label; broken files get clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store
from quickstudy.labels.formats import (
    export_coco,
    export_voc,
    export_yolo,
    import_coco,
    import_folder,
    import_voc,
    import_yolo,
)

from .labels_fixtures import small_store, write_image


def content(store: Store) -> Counter:
    """Boxes as (image file, geometry, allowed classes, split): what a round trip must keep."""
    return Counter(
        (s.path.name, tuple(round(v, 3) for v in b.xyxy), b.allowed, s.split)
        for s in store.samples()
        for b in s.boxes
    )


@pytest.fixture
def split_store(tmp_path: Path) -> Store:
    store = small_store(tmp_path)
    store.taxonomy.split("a", ["a1", "a2"])  # partial labels
    return store


def test_voc_round_trip(split_store: Store, tmp_path: Path) -> None:
    export_voc(split_store, tmp_path / "voc")
    again = Store.open(tmp_path / "again.qs")
    import_voc(again, tmp_path / "voc")
    assert content(again) == content(split_store)
    assert set(again.classes()) == set(split_store.classes())


def test_coco_round_trip(split_store: Store, tmp_path: Path) -> None:
    path = export_coco(split_store, tmp_path / "coco.json")
    data = json.loads(path.read_text())
    assert {c["name"]: c["supercategory"] for c in data["categories"]}["a1"] == "a"
    assert any(a["category_id"] is None and "quickstudy_allowed" not in a for a in data["annotations"])
    again = Store.open(tmp_path / "again.qs")
    import_coco(again, path)
    assert content(again) == content(split_store)


def test_yolo_refuses_boxes_without_a_single_class_unless_asked(split_store: Store, tmp_path: Path) -> None:
    with pytest.raises(QuickstudyError, match=r"box\(es\) have no single class"):
        export_yolo(split_store, tmp_path / "yolo")
    result = export_yolo(split_store, tmp_path / "yolo", skip_unlabelled=True)
    assert result["skipped_without_single_class"] > 0
    again = Store.open(tmp_path / "again.qs")
    import_yolo(again, tmp_path / "yolo")
    kept = Counter({k: v for k, v in content(split_store).items() if len(k[2]) == 1})
    assert content(again) == kept


def test_full_label_yolo_round_trip(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    for box in store.boxes():
        if box.class_id is None:
            store.set_label(box.box_id, "c")
    export_yolo(store, tmp_path / "yolo")
    again = Store.open(tmp_path / "again.qs")
    import_yolo(again, tmp_path / "yolo")
    assert content(again) == content(store)


def test_folder_import_gives_whole_image_boxes(tmp_path: Path) -> None:
    for cls in ("dent", "pit"):
        for i in range(3):
            write_image(tmp_path / "folders" / cls / f"{cls}{i}.png", (20, 16), seed=i + len(cls))
    store = Store.open(tmp_path / "s.qs")
    report = import_folder(store, tmp_path / "folders")
    assert report.images == 6 and store.classes() == ["dent", "pit"]
    assert all(s.boxes[0].xyxy == (0, 0, 20, 16) for s in store.samples())


def test_broken_xml_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "x.xml").write_text("<annotation>\n<size><width>4</width>\n</annotation>")
    with pytest.raises(QuickstudyError, match=r"x\.xml:3:\d+: XML does not parse"):
        import_voc(Store.open(tmp_path / "s.qs"), tmp_path / "voc")


def test_voc_missing_fields(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "y.xml").write_text(
        "<annotation><size><width>4</width><height>4</height></size>"
        "<object><name>a</name><bndbox><xmin>1</xmin><ymin>x</ymin></bndbox></object></annotation>"
    )
    with pytest.raises(QuickstudyError, match=r"y\.xml object 1: <ymin> is not a number"):
        import_voc(Store.open(tmp_path / "s.qs"), tmp_path / "voc")


def test_broken_json_and_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(QuickstudyError, match=r"bad\.json:1:\d+: JSON does not parse"):
        import_coco(Store.open(tmp_path / "s.qs"), bad)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(QuickstudyError, match=r"data\.yaml: YAML does not parse"):
        import_yolo(Store.open(tmp_path / "s2.qs"), tmp_path / "y")


def test_yolo_bad_line_names_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.png", (10, 10))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: [scratch]\n")
    with pytest.raises(QuickstudyError, match=r"a\.txt:2: class index 7"):
        import_yolo(Store.open(tmp_path / "s.qs"), root)


def test_voc_refuses_a_fractional_image_size(tmp_path: Path) -> None:
    write_image(tmp_path / "voc" / "JPEGImages" / "a.png", (200, 30))
    (tmp_path / "voc" / "Annotations").mkdir()
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>200.7</width><height>30</height></size>"
        "</annotation>"
    )
    with pytest.raises(QuickstudyError, match=r"a\.xml: <width> must be a whole number, got '200\.7'"):
        import_voc(Store.open(tmp_path / "s.qs"), tmp_path / "voc")


# -- COCO: input that would be silently misread ---------------------------------------------------------


def coco_file(tmp_path: Path, **changes: object) -> Path:
    """Two images with one box each, categories a and b; ``changes`` replace top-level keys."""
    for name in ("one.png", "two.png"):
        write_image(tmp_path / name, (40, 30), seed=len(name) + ord(name[0]))
    data: dict[str, object] = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "two.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1},
            {"id": 11, "image_id": 2, "bbox": [2, 2, 5, 5], "category_id": 2},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    data.update(changes)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_file_fixture_imports(tmp_path: Path) -> None:
    report = import_coco(Store.open(tmp_path / "s.qs"), coco_file(tmp_path))
    assert (report.images, report.boxes) == (2, 2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {
                "images": [
                    {"id": 1, "file_name": "one.png", "width": 40, "height": 30},
                    {"id": 1, "file_name": "two.png", "width": 40, "height": 30},
                ]
            },
            r"coco\.json: image ids used more than once: 1$",
        ),
        (
            {
                "annotations": [
                    {"id": 7, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1},
                    {"id": 7, "image_id": 2, "bbox": [2, 2, 5, 5], "category_id": 2},
                ]
            },
            r"coco\.json: annotation ids used more than once: 7$",
        ),
        (
            {"categories": [{"id": 1, "name": None}, {"id": 2, "name": "b"}]},
            r"coco\.json category 1: name must be text, got None",
        ),
        (
            {"categories": [{"id": 1, "name": 5}, {"id": 2, "name": "b"}]},
            r"coco\.json category 1: name must be text, got 5",
        ),
        (
            {
                "annotations": [
                    {"id": 10, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": None},
                    {
                        "id": 11,
                        "image_id": 2,
                        "bbox": [2, 2, 5, 5],
                        "category_id": None,
                        "quickstudy_allowed": "ab",
                    },
                ]
            },
            r"coco\.json annotation 11: quickstudy_allowed must be a list of class names, got 'ab'",
        ),
        (
            {"images": [{"id": 1, "file_name": "one.png", "width": 40.5, "height": 30}], "annotations": []},
            r"coco\.json image 1: width must be a whole number, got 40\.5",
        ),
    ],
)
def test_coco_refuses_what_it_would_misread(tmp_path: Path, changes: dict, message: str) -> None:
    store = Store.open(tmp_path / "s.qs")
    with pytest.raises(QuickstudyError, match=message):
        import_coco(store, coco_file(tmp_path, **changes))
    assert store.stats()["images"] == 0


@pytest.mark.parametrize("split", ["holdout", 3])
def test_coco_split_is_checked_as_set_splits_checks_it(tmp_path: Path, split: object) -> None:
    images = [
        {"id": 1, "file_name": "one.png", "width": 40, "height": 30, "split": "train"},
        {"id": 2, "file_name": "two.png", "width": 40, "height": 30, "split": split},
    ]
    store = Store.open(tmp_path / "s.qs")
    with pytest.raises(QuickstudyError, match=rf"coco\.json image 2: unknown split {split!r} \(use train"):
        import_coco(store, coco_file(tmp_path, images=images))
    with pytest.raises(QuickstudyError, match=rf"unknown split {split!r} \(use train"):
        small_store(tmp_path / "other").set_splits({1: split})  # type: ignore[dict-item]


def test_coco_that_is_not_utf8_or_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"images": [], "info": "Qualität"}'.encode("latin-1"))
    with pytest.raises(QuickstudyError, match=r"latin\.json: not UTF-8 text \(byte 30\)"):
        import_coco(Store.open(tmp_path / "s.qs"), latin)
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(QuickstudyError, match=r"deep\.json: JSON nested too deeply to read"):
        import_coco(Store.open(tmp_path / "s.qs"), deep)


# -- YOLO ---------------------------------------------------------------------------------------------


def yolo_root(tmp_path: Path, labels: str, names: str = "names: [scratch, dent]\n") -> Path:
    root = tmp_path / "y"
    write_image(root / "images" / "train" / "a.png", (100, 50))
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train" / "a.txt").write_text(labels)
    (root / "data.yaml").write_text(names)
    return root


def test_yolo_segmentation_lines_become_the_polygons_bounding_box(tmp_path: Path) -> None:
    root = yolo_root(tmp_path, "0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.3 0.1 0.25 0.6 0.15 0.4\n")
    store = Store.open(tmp_path / "s.qs")
    report = import_yolo(store, root)
    assert (report.boxes, report.boxes_from_polygons) == (2, 1)
    boxes = {box.allowed: tuple(round(v, 6) for v in box.xyxy) for box in store.samples()[0].boxes}
    assert boxes[frozenset({"dent"})] == (10.0, 5.0, 30.0, 30.0)
    assert boxes[frozenset({"scratch"})] == (40.0, 20.0, 60.0, 30.0)


@pytest.mark.parametrize(
    "line",
    [
        "0 0.5 0.5 0.2 0.2 0.9",  # 6 fields: a box with an extra number
        "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4",  # 8 fields: a polygon missing a coordinate
        "0 0.5 0.5",
        "0 0.1 0.1 0.2 0.2 x 0.3",
    ],
)
def test_yolo_lines_of_any_other_length_name_file_and_line(tmp_path: Path, line: str) -> None:
    root = yolo_root(tmp_path, f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(QuickstudyError, match=r"a\.txt:3: expected 'class cx cy w h' or a polygon"):
        import_yolo(Store.open(tmp_path / "s.qs"), root)


def test_yolo_names_mapping_keeps_its_indices_and_refuses_mixed_keys(tmp_path: Path) -> None:
    root = yolo_root(tmp_path, "2 0.5 0.5 0.2 0.2\n", names="names: {0: scratch, 2: dent}\n")
    store = Store.open(tmp_path / "s.qs")
    import_yolo(store, root)
    assert store.samples()[0].boxes[0].allowed == {"dent"}
    mixed = yolo_root(tmp_path / "m", "0 0.5 0.5 0.2 0.2\n", names="names: {0: scratch, '1': dent}\n")
    with pytest.raises(QuickstudyError, match=r"data\.yaml: 'names' keys must be class indices"):
        import_yolo(Store.open(tmp_path / "m.qs"), mixed)
    nameless = yolo_root(tmp_path / "n", "0 0.5 0.5 0.2 0.2\n", names="names: [~]\n")
    with pytest.raises(QuickstudyError, match=r"data\.yaml: class 0 needs a name, got None"):
        import_yolo(Store.open(tmp_path / "n.qs"), nameless)


def test_yolo_files_that_are_not_utf8_are_one_line(tmp_path: Path) -> None:
    root = yolo_root(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "a.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 \xff\n")
    with pytest.raises(QuickstudyError, match=r"a\.txt: not UTF-8 text \(byte 18\)"):
        import_yolo(Store.open(tmp_path / "s.qs"), root)
    (root / "data.yaml").write_bytes("names: [Kratzer, Delle, Rißbildung]\n".encode("latin-1"))
    with pytest.raises(QuickstudyError, match=r"data\.yaml: not UTF-8 text"):
        import_yolo(Store.open(tmp_path / "s.qs"), root)
