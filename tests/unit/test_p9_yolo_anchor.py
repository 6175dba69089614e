"""The P9 YOLO anchor's data side (no Ultralytics needed): its split by type, and its label files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from p9_yolo_anchor import CLASSES, p9_images, round_robin, write_yolo_dataset

from quickstudy.labels.records import ImportedBox, ImportedImage


def _tile_set(root: Path) -> Path:
    """Two 40 x 20 images per type (the first TEST, the second TRAIN); a defect mask holds one 4 x 2 px box."""
    for kind in (*CLASSES, "Free"):
        folder = root / f"MT_{kind}" / "Imgs"
        folder.mkdir(parents=True)
        for stem in ("a", "b"):
            Image.new("L", (40, 20), 128).save(folder / f"{stem}.jpg")
            mask = np.zeros((20, 40), dtype=np.uint8)
            if kind != "Free":
                mask[4:6, 10:14] = 255
            Image.fromarray(mask).save(folder / f"{stem}.png")
    return root


def test_a_class_subset_trains_on_its_types_and_free_and_predicts_every_test_image(tmp_path: Path) -> None:
    train, test = p9_images(_tile_set(tmp_path), ["Blowhole", "Uneven"])
    assert sorted(i.path.parent.parent.name for i in train) == ["MT_Blowhole", "MT_Free", "MT_Uneven"]
    assert len(test) == 6 and all(i.path.stem == "a" for i in test)


def test_round_robin_takes_every_type_before_a_second_image_of_one() -> None:
    images = [
        ImportedImage(Path(f"MT_{kind}/Imgs/{n}.jpg"), 1, 1) for kind in ("Free", "Fray") for n in range(3)
    ]
    assert [str(i.path) for i in round_robin(images, 3)] == [
        "MT_Free/Imgs/0.jpg",
        "MT_Fray/Imgs/0.jpg",
        "MT_Free/Imgs/1.jpg",
    ]


def test_labels_are_normalised_by_each_images_own_size_and_free_images_get_empty_files(
    tmp_path: Path,
) -> None:
    crack = ImportedImage(
        tmp_path / "MT_Crack/Imgs/c.jpg", 400, 200, [ImportedBox((100, 50, 200, 150), "Crack")]
    )
    free = ImportedImage(tmp_path / "MT_Free/Imgs/f.jpg", 300, 600)
    data_yaml = write_yolo_dataset([crack, free], [], tmp_path / "yolo", CLASSES)
    labels = tmp_path / "yolo" / "labels" / "train"
    assert (labels / "Crack_c.txt").read_text() == "2 0.375000 0.500000 0.250000 0.500000\n"
    assert (labels / "Free_f.txt").read_text() == ""
    assert (tmp_path / "yolo" / "images" / "train" / "Crack_c.jpg").readlink() == crack.path
    assert "  4: Uneven\n" in data_yaml.read_text()
