"""Reading images for training and prediction: orientation, colour, bit depth and hostile files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quickstudy.data.images import carries_colour, read_image
from quickstudy.errors import QuickstudyError


def _marked(width: int, height: int) -> np.ndarray:
    """A dark image with one bright pixel block at the top left, to follow through a rotation."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[0:2, 0:3] = 255
    return pixels


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.fromarray(_marked(6, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored.save(tmp_path / "phone.png", exif=exif.tobytes())
    shown = read_image(tmp_path / "phone.png")
    assert shown.shape == (6, 4)  # displayed: 4 wide, 6 tall
    assert shown[0:3, 2:4].min() == 255 and shown.sum() == 255 * 6  # the block moved to the top right


def test_colour_is_kept_only_when_asked_and_detected_only_when_channels_differ(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    grey_as_rgb = np.repeat(np.full((8, 8, 1), 90, dtype=np.uint8), 3, axis=2)
    Image.fromarray(grey_as_rgb).save(tmp_path / "grey.jpg")
    assert read_image(tmp_path / "red.png").shape == (8, 8)
    red = read_image(tmp_path / "red.png", colour=True)
    assert red.shape == (8, 8, 3) and carries_colour(red)
    assert not carries_colour(read_image(tmp_path / "grey.jpg", colour=True))


def test_sixteen_bit_images_are_stretched_to_eight_bits(tmp_path: Path) -> None:
    deep = np.array([[1000, 3000], [5000, 1000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").tolist() == [[0, 127], [255, 0]]
    assert read_image(tmp_path / "deep.png", colour=True)[..., 1].tolist() == [[0, 127], [255, 0]]


def test_hostile_and_broken_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_marked(64, 64)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(QuickstudyError, match=r"cut\.jpg: not a readable image"):
        read_image(tmp_path / "cut.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(QuickstudyError, match=r"ok\.jpg: refused as a possible decompression bomb"):
        read_image(tmp_path / "ok.jpg")
    with pytest.raises(QuickstudyError, match=r": is a folder, not an image"):
        read_image(tmp_path)
