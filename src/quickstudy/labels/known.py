"""Known datasets and their protocol splits (DESIGN.md P1)."""

from __future__ import annotations

import re
from pathlib import Path

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats.voc import read_voc
from quickstudy.labels.store import ImportReport, Store

NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
NEU_NOVEL = ("pitted_surface", "scratches")
NEU_BASE = tuple(c for c in NEU_CLASSES if c not in NEU_NOVEL)
_NEU_NAME = re.compile(r"^(?P<cls>.+)_(?P<n>\d+)$")


def _neu_parts(path: str | Path) -> tuple[str, int]:
    match = _NEU_NAME.match(Path(path).stem)
    if match is None:
        raise QuickstudyError(f"{path}: not a NEU-DET image name (<class>_<n>)")
    return match["cls"], int(match["n"])


def neu_class_of(path: str | Path) -> str:
    """The folder class of a NEU-DET image: ``crazing_12.jpg`` -> ``crazing``."""
    return _neu_parts(path)[0]


def neu_split(path: str | Path) -> str:
    """P1: ``test`` when n % 5 == 0, else ``train``."""
    return "test" if _neu_parts(path)[1] % 5 == 0 else "train"


def is_neu_validation(path: str | Path) -> bool:
    """P1 model selection uses the TRAIN images with n % 5 == 1 (never TEST)."""
    return _neu_parts(path)[1] % 5 == 1


def import_neu_det(store: Store, root: str | Path, **options: object) -> ImportReport:
    """Import NEU-DET (VOC) with every image tagged with its P1 split, in one transaction."""
    images = read_voc(Path(root))
    for image in images:
        if _NEU_NAME.match(image.path.stem):
            image.split = neu_split(image.path)
    return store.import_images(images, source=f"neu-det:{root}", **options)  # type: ignore[arg-type]
