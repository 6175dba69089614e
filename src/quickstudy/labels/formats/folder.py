"""Image folders: for classification, ``root/<class>/*.png``, each image with one whole-image box of its
class, so classification data lives in the same label model as detection data; and a bare folder of
images nobody has labelled yet (``--format images``)."""

from __future__ import annotations

from pathlib import Path

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import IMAGE_SUFFIXES
from quickstudy.labels.images import header_size
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store


def read_folder(root: Path, skip_invalid: bool = False) -> list[ImportedImage]:
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not class_dirs:
        raise QuickstudyError(f"{root}: expected one sub-folder per class (root/<class>/*.png)")
    images = []
    for class_dir in class_dirs:
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                width, height = header_size(path)
            except QuickstudyError:
                if skip_invalid:  # the store's import lists it among the skipped images
                    width, height = 0, 0
                else:
                    raise
            box = ImportedBox((0.0, 0.0, float(width), float(height)), class_dir.name)
            images.append(ImportedImage(path, width, height, [box] if width else [], source=str(path)))
    return images


def import_folder(
    store: Store, root: str | Path, skip_invalid: bool = False, **options: object
) -> ImportReport:
    images = read_folder(Path(root), skip_invalid=skip_invalid)
    return store.import_images(images, source=f"folder:{root}", skip_invalid=skip_invalid, **options)  # type: ignore[arg-type]


def read_unlabelled(root: Path) -> list[ImportedImage]:
    """Every image under ``root`` (recursively), without boxes and not checked: nobody has looked yet."""
    root = Path(root)
    if not root.is_dir():
        raise QuickstudyError(f"{root}: not a folder of images")
    images = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        width, height = header_size(path)
        images.append(ImportedImage(path, width, height, [], source=str(path), checked=False))
    if not images:
        raise QuickstudyError(f"{root}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return images


def import_unlabelled(store: Store, root: str | Path, **options: object) -> ImportReport:
    """Import a bare folder of images as not yet labelled (never used as defect-free)."""
    return store.import_images(read_unlabelled(Path(root)), source=f"images:{root}", **options)  # type: ignore[arg-type]
