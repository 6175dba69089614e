"""Small pieces every format reader shares: label strings, image lookup, whole-number sizes."""

from __future__ import annotations

import contextlib
from pathlib import Path

from quickstudy.errors import QuickstudyError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PARTIAL_SEPARATOR = "|"


def find_image(folder: Path, name: str) -> Path:
    """``folder/name``, or a file with the same stem and any image suffix."""
    candidate = folder / name
    if candidate.exists():
        return candidate
    for suffix in IMAGE_SUFFIXES:
        alternative = candidate.with_suffix(suffix)
        if alternative.exists():
            return alternative
    return candidate  # missing: the store's import reports it with the annotation file's name


def label_from_text(text: str | None) -> str | frozenset[str] | None:
    """``""`` -> no class, ``"a|b"`` -> partial label {a, b}, ``"a"`` -> class a."""
    text = (text or "").strip()
    if not text:
        return None
    if PARTIAL_SEPARATOR in text:
        return frozenset(part.strip() for part in text.split(PARTIAL_SEPARATOR) if part.strip())
    return text


def label_to_text(allowed: frozenset[str]) -> str:
    return PARTIAL_SEPARATOR.join(sorted(allowed))


def whole_number(value: object, what: str, where: str) -> int:
    """``value`` (a number, or text for XML) as an int; a fraction such as ``200.7`` is refused rather
    than truncated."""
    number = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
    if number is None or not number.is_integer():
        raise QuickstudyError(f"{where}: {what} must be a whole number, got {value!r}")
    return int(number)
