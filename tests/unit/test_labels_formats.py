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
