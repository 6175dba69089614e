"""Reading images from disk into grayscale arrays, with one-line errors that name the file.

Surfaces are grayscale: colour images are converted (ITU-R 601 luma), alpha is dropped, 16-bit and
float images are rescaled to 0..255 from their own range.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from quickstudy.errors import QuickstudyError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def _to_gray_uint8(image: Image.Image, source: str) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return np.clip((array - low) * scale, 0, 255).astype(np.uint8)
    if image.mode != "L":
        image = image.convert("RGBA").convert("RGB").convert("L") if "A" in image.mode else image.convert("L")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 2 or array.size == 0:
        raise QuickstudyError(f"{source}: image has no pixels (shape {array.shape})")
    return array


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to a grayscale ``uint8 [H, W]`` array."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_gray_uint8(image, source)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise QuickstudyError(f"{source}: not a readable image ({error})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as grayscale ``uint8 [H, W]``.

    >>> read_image("IMAGES/crazing_1.jpg").shape  # doctest: +SKIP
    (200, 200)

    Raises :class:`QuickstudyError` naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise QuickstudyError(f"{path}: cannot read image ({error.strerror or error})") from None
    return decode_image(data, str(path))
