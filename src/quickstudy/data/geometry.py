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
