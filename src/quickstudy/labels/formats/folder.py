"""Image folders for classification: ``root/<class>/*.png``; each image gets one whole-image box of its
class, so classification data lives in the same label model as detection data."""

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
