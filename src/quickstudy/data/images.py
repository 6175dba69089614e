"""Reading images from disk as grayscale or colour arrays, with one-line errors that name the file.

Grayscale is ITU-R 601 luma of colour images; alpha is dropped; 16-bit and float images are rescaled
to 0..255 from their own range. The EXIF orientation is applied, so pixels are as a person sees them
(and as the store's width and height say). Decompression bombs (more pixels than PIL's limit) are
refused.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from quickstudy.errors import QuickstudyError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# An image carries colour when its channels differ by more than this on average (0..255): a grey
# picture saved as an RGB JPEG (NEU-DET) has identical channels, up to rounding.
COLOUR_SPREAD = 2.0


def _rescaled(image: Image.Image) -> Image.Image:
    """16-bit and float images as 8-bit grey, stretched over their own range."""
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.clip((array - low) * scale, 0, 255).astype(np.uint8))


def _to_uint8(image: Image.Image, source: str, colour: bool) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _rescaled(image)
    if "A" in image.mode or image.mode == "P":
        image = image.convert("RGBA").convert("RGB")
    image = image.convert("RGB" if colour else "L")
    array = np.asarray(image, dtype=np.uint8)
    if array.size == 0:
        raise QuickstudyError(f"{source}: image has no pixels (shape {array.shape})")
    return array


def decode_image(data: bytes, source: str, colour: bool = False) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to ``uint8 [H, W]`` (grey) or ``[H, W, 3]`` (colour)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return _to_uint8(ImageOps.exif_transpose(image), source, colour)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise QuickstudyError(f"{source}: refused as a possible decompression bomb ({error})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise QuickstudyError(f"{source}: not a readable image ({error})") from None


def read_image(path: str | os.PathLike[str], colour: bool = False) -> np.ndarray:
    """Read an image file as ``uint8 [H, W]`` grey, or ``[H, W, 3]`` RGB with ``colour``.

    >>> read_image("IMAGES/crazing_1.jpg").shape  # doctest: +SKIP
    (200, 200)

    Raises :class:`QuickstudyError` naming the file when it is missing, a folder, truncated or not an image.
    """
    path = Path(path)
    if path.is_dir():
        raise QuickstudyError(f"{path}: is a folder, not an image (give the image files, e.g. {path}/*.jpg)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise QuickstudyError(f"{path}: cannot read image ({error.strerror or error})") from None
    return decode_image(data, str(path), colour)


def carries_colour(pixels: np.ndarray) -> bool:
    """Whether an ``[H, W, 3]`` array is a colour picture rather than grey stored in three channels."""
    if pixels.ndim != 3:
        return False
    # plane by plane: a reduction over the last axis of a [H, W, 3] array is 20x slower in numpy
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # never below 0
    return float(spread.mean()) > COLOUR_SPREAD


def as_channels(pixels: np.ndarray, channels: int, where: str) -> tuple[np.ndarray, str | None]:
    """``pixels`` (grey or RGB) with ``channels`` channels, and a note when a colour picture was turned to
    grey for a grey model or a grey one repeated over three channels for a colour model."""
    if channels == 1:
        if pixels.ndim == 2:
            return pixels, None
        grey = np.asarray(Image.fromarray(pixels).convert("L"))
        note = f"{where}: colour image read as grey (the model was trained on grey images)"
        return grey, note if carries_colour(pixels) else None
    if pixels.ndim == 3:
        return pixels, None
    return np.repeat(pixels[..., None], 3, axis=2), f"{where}: grey image given to a colour model"
