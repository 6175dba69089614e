"""Where an image's pixels go on the network's input, in numpy and Pillow only (no torch), so that the
torch predictor and the deployed onnxruntime predictor prepare images the same way.

>>> image, scale = letterbox(np.zeros((50, 100), np.uint8), 64)
>>> image.shape, scale
((1, 64, 64), 0.64)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from quickstudy.errors import QuickstudyError


def letterbox(pixels: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``uint8 [H, W]`` (grey) or ``[H, W, 3]`` (colour) → ``uint8 [C, size, size]``, resized so that the
    long side is ``size`` with the aspect kept (Pillow's bilinear, which antialiases when shrinking) and
    padded at the right and bottom with the image's mean; and the scale from image to input pixels, the
    same along x and y (a box maps by multiplying, with no offset). An image already ``size`` on its long
    side is not resampled, so square data at its own size sees exactly its pixels.
    """
    h, w = pixels.shape[:2]
    if h == 0 or w == 0:
        raise QuickstudyError(f"image of size {w}x{h} is empty")
    scale = size / max(h, w)
    new_h, new_w = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    image = np.asarray(pixels, dtype=np.uint8)
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    planes = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    if (new_h, new_w) == (size, size):
        return np.array(planes), scale  # a writable copy
    mean = np.rint(planes.reshape(planes.shape[0], -1).mean(axis=1)).astype(np.uint8)
    canvas = np.empty((planes.shape[0], size, size), dtype=np.uint8)
    canvas[...] = mean[:, None, None]
    canvas[:, :new_h, :new_w] = planes
    return canvas, scale


# Neighbouring tiles overlap by this share of a tile, so that a defect cut by one tile's edge lies whole
# in the next (defects are small next to a tile: that is when tiling is chosen).
TILE_OVERLAP = 0.25


def tile_origins(width: int, height: int, tile: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int]]:
    """Top-left corners ``(x0, y0)`` of ``tile``-sized tiles covering a ``width`` x ``height`` frame, evenly
    spread with at least ``overlap`` of a tile shared by neighbours; a side no longer than a tile has one.

    >>> tile_origins(1000, 300, 400)
    [(0, 0), (300, 0), (600, 0)]
    """

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        stride = tile * (1 - overlap)
        count = int(np.ceil((length - tile) / stride)) + 1
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    return [(x, y) for y in starts(height) for x in starts(width)]


def crop(pixels: np.ndarray, x0: int, y0: int, tile: int) -> np.ndarray:
    """The ``tile`` x ``tile`` window at ``(x0, y0)`` as ``uint8 [C, tile, tile]`` at full resolution; where
    the frame ends first, padded at the right and bottom with the window's mean (as :func:`letterbox`)."""
    window = np.asarray(pixels, dtype=np.uint8)[y0 : y0 + tile, x0 : x0 + tile]
    planes = window[None] if window.ndim == 2 else window.transpose(2, 0, 1)
    if planes.shape[1:] == (tile, tile):
        return np.array(planes)
    mean = np.rint(planes.reshape(planes.shape[0], -1).mean(axis=1)).astype(np.uint8)
    canvas = np.empty((planes.shape[0], tile, tile), dtype=np.uint8)
    canvas[...] = mean[:, None, None]
    canvas[:, : planes.shape[1], : planes.shape[2]] = planes
    return canvas
