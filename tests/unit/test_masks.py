"""Masks as labels: one box per 8-connected component, the mask file named in every error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats.masks import mask_boxes, read_magnetic_tile, read_mvtec

SHARED = Path(os.environ.get("QUICKSTUDY_DATA", Path(__file__).parents[3] / "shared" / "data"))


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def test_components_touching_at_a_corner_are_one_box_and_apart_are_two(tmp_path: Path) -> None:
    mask = np.zeros((20, 30))
    mask[2:5, 3:6] = 255  # rows 2..4, columns 3..5
    mask[5:8, 6:9] = 255  # touches the first at a corner only: 8-connected, same component
    mask[12:15, 20:28] = 200
    mask[0, 29] = 255  # a single pixel: under 2 px on a side, dropped
    mask[16:18, 0:2] = 100  # not above the threshold 127
    boxes = mask_boxes(_png(tmp_path / "m.png", mask))
    assert boxes == [(3.0, 2.0, 9.0, 8.0), (20.0, 12.0, 28.0, 15.0)]


def test_an_empty_mask_gives_no_box(tmp_path: Path) -> None:
    assert mask_boxes(_png(tmp_path / "m.png", np.zeros((8, 8)))) == []


def test_a_mask_whose_size_differs_from_its_image_names_both_files(tmp_path: Path) -> None:
    mask = _png(tmp_path / "a_mask.png", np.zeros((10, 12)))
    with pytest.raises(
        QuickstudyError, match=r"a_mask\.png: mask is 12 x 10 px but its image .*a\.png is 14 x 10"
    ):
        mask_boxes(mask, tmp_path / "a.png", (14, 10))


def test_a_mask_that_is_not_an_image_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(QuickstudyError, match=r"m\.png: not a readable mask image"):
        mask_boxes(bad)
    with pytest.raises(QuickstudyError, match=r"gone\.png: mask file not found"):
        mask_boxes(tmp_path / "gone.png")


def test_mvtec_folders_give_defect_free_and_masked_images(tmp_path: Path) -> None:
    root = tmp_path / "bottle"
    _png(root / "train" / "good" / "000.png", np.full((16, 16), 90))
    _png(root / "test" / "good" / "000.png", np.full((16, 16), 90))
    _png(root / "test" / "crack" / "000.png", np.full((16, 16), 90))
    mask = np.zeros((16, 16))
    mask[4:8, 5:9] = 255
    _png(root / "ground_truth" / "crack" / "000_mask.png", mask)
    images = {(im.split, im.path.parent.name): im for im in read_mvtec(root)}
    assert set(images) == {("train", "good"), ("test", "good"), ("test", "crack")}
    assert images["train", "good"].boxes == [] and images["test", "good"].boxes == []
    crack = images["test", "crack"]
    assert [(b.xyxy, b.label) for b in crack.boxes] == [((5.0, 4.0, 9.0, 8.0), "crack")]


def test_mvtec_image_without_its_mask_is_named(tmp_path: Path) -> None:
    _png(tmp_path / "c" / "test" / "crack" / "001.png", np.zeros((8, 8)))
    with pytest.raises(QuickstudyError, match=r"001\.png: its mask .*001_mask\.png is missing"):
        read_mvtec(tmp_path / "c")


def test_magnetic_tile_follows_p9() -> None:
    root = SHARED / "magnetic-tile"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    images = read_magnetic_tile(root)
    assert len(images) == 1344
    free = [im for im in images if im.path.parts[-3] == "MT_Free"]
    assert len(free) == 952 and all(not im.boxes and im.checked for im in free)
    unchecked = [im for im in images if not im.checked]  # Uneven images with an empty mask
    assert 0 < len(unchecked) < 10 and all(im.path.parts[-3] != "MT_Free" for im in unchecked)
    crack = sorted((im for im in images if im.path.parts[-3] == "MT_Crack"), key=lambda im: im.path.name)
    assert [im.split for im in crack[:6]] == ["test", "train", "train", "train", "train", "test"]
    assert sum(im.split == "test" for im in crack) == 12  # 57 images: i = 0, 5, ..., 55
    assert all(b.label == "Crack" for im in crack for b in im.boxes) and all(im.boxes for im in crack)


def test_an_image_filed_as_defective_whose_mask_keeps_no_box_is_not_called_defect_free(
    tmp_path: Path,
) -> None:
    root = tmp_path / "c"
    _png(root / "test" / "crack" / "000.png", np.zeros((8, 8)))
    _png(root / "ground_truth" / "crack" / "000_mask.png", np.zeros((8, 8)))
    (image,) = read_mvtec(root)
    assert image.boxes == [] and not image.checked
