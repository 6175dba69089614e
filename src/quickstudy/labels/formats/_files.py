"""Small pieces every format reader shares: image headers, label strings, image lookup."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from quickstudy.errors import QuickstudyError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PARTIAL_SEPARATOR = "|"


def image_header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, with a one-line error naming a bad file."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise QuickstudyError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise QuickstudyError(f"{path}: not a readable image ({error})") from None


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
