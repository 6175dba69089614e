"""Pixel masks as labels: one box per 8-connected component of a mask's pixels above 127.

Inspection datasets give defects as masks (MVTec AD, magnetic tile); a detector needs boxes. Every
mask format goes through :func:`mask_boxes`, so there is one conversion and one set of errors.

>>> from pathlib import Path
>>> read_magnetic_tile(Path("../shared/data/magnetic-tile"))[0].split  # doctest: +SKIP
'test'
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import IMAGE_SUFFIXES
from quickstudy.labels.images import header_size
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store

MASK_THRESHOLD = 127  # pixels above it are defect (DESIGN.md P9)
MIN_SIDE = 2  # a component whose box is under 2 px on a side is dropped (P9: mask noise, not a defect)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def mask_boxes(
    mask_path: Path, image_path: Path | None = None, image_size: tuple[int, int] | None = None
) -> list[tuple[float, float, float, float]]:
    """``(x1, y1, x2, y2)`` in pixel edges (a component over columns 3..5 spans x 3.0 to 6.0), one per
    8-connected component, in row-major order of their first pixel.

    ``image_size`` (width, height) must equal the mask's size; ``image_path`` names the image in that error.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(mask_path) as mask_image:
                mask = np.asarray(mask_image.convert("L")) > MASK_THRESHOLD
    except FileNotFoundError:
        raise QuickstudyError(f"{mask_path}: mask file not found") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as error:
        raise QuickstudyError(f"{mask_path}: not a readable mask image ({error})") from None
    height, width = mask.shape
    if image_size is not None and image_size != (width, height):
        raise QuickstudyError(
            f"{mask_path}: mask is {width} x {height} px but its image {image_path or ''} is "
            f"{image_size[0]} x {image_size[1]} px"
        )
    labels, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        if rows.stop - rows.start < MIN_SIDE or cols.stop - cols.start < MIN_SIDE:
            continue
        boxes.append((float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)))
    return boxes


def _masked_image(
    image_path: Path, mask_path: Path | None, label: str | None, split: str | None
) -> ImportedImage:
    """An image with the boxes of its mask; ``mask_path`` None: a defect-free image. An image filed as
    defective whose mask keeps no box is not marked checked, so it never teaches "defect-free"."""
    width, height = header_size(image_path)
    boxes = [] if mask_path is None else mask_boxes(mask_path, image_path, (width, height))
    return ImportedImage(
        image_path,
        width,
        height,
        [ImportedBox(xyxy, label) for xyxy in boxes],
        split=split,
        source=str(mask_path or image_path),
        checked=mask_path is None or bool(boxes),
    )


def read_magnetic_tile(root: Path) -> list[ImportedImage]:
    """The magnetic-tile set with its P9 split: within each ``MT_<Type>/Imgs``, sorted by file name, the
    i-th image is ``test`` if i % 5 == 0, else ``train``; class = ``<Type>``; ``MT_Free`` holds no defect."""
    root = Path(root)
    type_dirs = sorted(p for p in root.glob("MT_*") if (p / "Imgs").is_dir())
    if not type_dirs:
        raise QuickstudyError(f"{root}: not the magnetic-tile set (no MT_<Type>/Imgs folders)")
    images = []
    for type_dir in type_dirs:
        kind = type_dir.name.removeprefix("MT_")
        paths = sorted(p for p in (type_dir / "Imgs").iterdir() if p.suffix.lower() == ".jpg")
        for i, path in enumerate(paths):
            split = "test" if i % 5 == 0 else "train"
            mask = None if kind == "Free" else path.with_suffix(".png")  # Free: checked, no defect
            images.append(_masked_image(path, mask, kind, split))
    return images


def read_mvtec(root: Path) -> list[ImportedImage]:
    """An MVTec AD category folder: ``train/good`` (defect-free, split train), ``test/good`` (defect-free,
    split test), ``test/<type>/<stem>.png`` with ``ground_truth/<type>/<stem>_mask.png`` (class <type>)."""
    root = Path(root)
    if not (root / "train" / "good").is_dir() and not (root / "test").is_dir():
        raise QuickstudyError(
            f"{root}: not an MVTec AD category folder (expected train/good and test/<type>)"
        )
    images = []
    for split in ("train", "test"):
        for type_dir in sorted(p for p in (root / split).glob("*") if p.is_dir()):
            for path in sorted(p for p in type_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                if type_dir.name == "good":
                    images.append(_masked_image(path, None, None, split))
                    continue
                mask = root / "ground_truth" / type_dir.name / f"{path.stem}_mask.png"
                if not mask.is_file():
                    raise QuickstudyError(f"{path}: its mask {mask} is missing")
                images.append(_masked_image(path, mask, type_dir.name, split))
    return images


def import_magnetic_tile(store: Store, root: str | Path, **options: object) -> ImportReport:
    """Import the magnetic-tile set tagged with its P9 split, in one transaction; ``MT_Free`` images are
    checked and defect-free."""
    return store.import_images(read_magnetic_tile(Path(root)), source=f"magnetic-tile:{root}", **options)  # type: ignore[arg-type]


def import_mvtec(store: Store, root: str | Path, **options: object) -> ImportReport:
    """Import an MVTec AD category folder; ``good`` images are checked and defect-free."""
    return store.import_images(read_mvtec(Path(root)), source=f"mvtec:{root}", **options)  # type: ignore[arg-type]
