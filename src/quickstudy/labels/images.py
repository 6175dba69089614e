"""Opening image files at import, with a one-line error naming a file that is unreadable, truncated
or a decompression bomb (an image header promising more pixels than PIL's limit)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from quickstudy.errors import QuickstudyError


@contextlib.contextmanager
def _opened(path: Path, data: bytes | None = None) -> Iterator[Image.Image]:
    with warnings.catch_warnings():
        # PIL only warns between its limit and twice it; either way the file is refused.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data) if data is not None else path) as image:
                yield image
        except FileNotFoundError:
            raise QuickstudyError(f"{path}: image file not found") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise QuickstudyError(f"{path}: refused as a possible decompression bomb ({error})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
            raise QuickstudyError(f"{path}: not a readable image ({error})") from None


# EXIF orientations 5-8 turn the picture by 90 degrees: it is displayed with width and height swapped.
_TURNED = (5, 6, 7, 8)


def _displayed(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as a person sees the picture (the EXIF orientation applied), which is how
    boxes are drawn and how training and prediction read the pixels."""
    width, height = image.size
    return (height, width) if image.getexif().get(0x0112) in _TURNED else (width, height)


def header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as displayed, from the file header (cheap: decodes no pixels)."""
    with _opened(path) as image:
        return _displayed(image)


def decoded_size(path: Path, data: bytes) -> tuple[int, int]:
    """``(width, height)`` as displayed of ``data`` (the bytes of ``path``), after decoding every pixel: a
    truncated or damaged file fails here rather than later in training or ``predict``."""
    with _opened(path, data) as image:
        image.load()
        return _displayed(image)
