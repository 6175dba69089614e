"""YOLO txt + data.yaml (Ultralytics layout: ``images/<split>/x.jpg`` beside ``labels/<split>/x.txt``).

Import reads detection lines (``class cx cy w h``) and segmentation lines (``class x1 y1 x2 y2 x3 y3
...``, a polygon), keeping a polygon's bounding box. YOLO has no way to write a box without class or a
partial label: export refuses them by default, naming how many, and with ``skip_unlabelled=True``
leaves them out and says so in its result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import IMAGE_SUFFIXES
from quickstudy.labels.images import header_size
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store
from quickstudy.labels.taxonomy import check_class_name


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise QuickstudyError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _class_names(config: dict[str, Any], where: Path) -> dict[int, str]:
    """Class index -> name, from ``names`` as a list or as an index -> name mapping."""
    names = config.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise QuickstudyError(f"{where}: data.yaml needs 'names' (a list or an index -> name mapping)")
    for index, name in names.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise QuickstudyError(
                f"{where}: 'names' keys must be class indices (whole numbers), got {index!r}"
            )
        if not isinstance(name, str | int) or isinstance(name, bool):
            raise QuickstudyError(f"{where}: class {index} needs a name, got {name!r}")
    return {index: check_class_name(str(name), str(where)) for index, name in names.items()}


def _box(fields: list[str], width: int, height: int) -> tuple[tuple[float, float, float, float], bool]:
    """Pixel ``xyxy`` of a detection line (class cx cy w h), or of the bounding box of a segmentation
    line (class x1 y1 x2 y2 x3 y3 ...); and whether it came from a polygon. ``ValueError`` otherwise."""
    values = [float(v) for v in fields[1:]]
    if len(values) == 4:
        cx, cy, w, h = values
        return (
            (cx - w / 2) * width,
            (cy - h / 2) * height,
            (cx + w / 2) * width,
            (cy + h / 2) * height,
        ), False
    if len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        return (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height), True
    raise ValueError(f"{len(fields)} fields")


def read_yolo(root: Path) -> list[ImportedImage]:
    """Every image under ``root/images`` with the boxes of its label file; a segmentation line (class and
    polygon) becomes the polygon's bounding box, marked ``from_polygon``."""
    root = Path(root)
    config_path = root / "data.yaml"
    try:
        config = yaml.safe_load(_read_text(config_path))
    except OSError:
        raise QuickstudyError(f"{config_path}: not found (a YOLO dataset needs data.yaml)") from None
    except yaml.YAMLError as error:
        raise QuickstudyError(f"{config_path}: YAML does not parse ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise QuickstudyError(f"{config_path}: YAML nested too deeply to read") from None
    if not isinstance(config, dict):
        raise QuickstudyError(f"{config_path}: expected a mapping")
    names = _class_names(config, config_path)
    images = []
    for image_path in sorted((root / "images").rglob("*")):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        relative = image_path.relative_to(root / "images")
        label_path = (root / "labels" / relative).with_suffix(".txt")
        width, height = header_size(image_path)
        split = (
            relative.parts[0]
            if len(relative.parts) > 1 and relative.parts[0] in ("train", "val", "test")
            else None
        )
        image = ImportedImage(image_path, width, height, split=split, source=str(label_path))
        lines = _read_text(label_path).splitlines() if label_path.exists() else []
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                cls = int(fields[0])
                xyxy, from_polygon = _box(fields, width, height)
            except ValueError:
                raise QuickstudyError(
                    f"{label_path}:{number}: expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 "
                    f"x3 y3 ...', got {line[:80]!r} ({len(fields)} fields)"
                ) from None
            if cls not in names:
                raise QuickstudyError(f"{label_path}:{number}: class index {cls} not in data.yaml names")
            image.boxes.append(ImportedBox(xyxy, names[cls], from_polygon))
        images.append(image)
    if not images:
        raise QuickstudyError(f"{root / 'images'}: no images found")
    return images


def import_yolo(store: Store, root: str | Path, **options: object) -> ImportReport:
    return store.import_images(read_yolo(Path(root)), source=f"yolo:{root}", **options)  # type: ignore[arg-type]


def export_yolo(store: Store, out: str | Path, skip_unlabelled: bool = False) -> dict[str, int]:
    """Write ``out/data.yaml``, ``out/labels/<split>/*.txt`` and links ``out/images/<split>/*`` to the images."""
    out = Path(out)
    classes = store.classes()
    index = {name: number for number, name in enumerate(classes)}
    samples = store.samples()
    without = sum(len(box.allowed) != 1 for sample in samples for box in sample.boxes)
    if without and not skip_unlabelled:
        raise QuickstudyError(
            f"{store.path}: {without} box(es) have no single class (no class, or a partial label); YOLO "
            "cannot hold them. Pass --skip-unlabelled to leave them out of this export"
        )
    written = 0
    for sample in samples:
        split = sample.split or "train"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        link = out / "images" / split / sample.path.name
        if not link.exists():
            os.symlink(sample.path, link)
        lines = []
        for box in sample.boxes:
            if len(box.allowed) != 1:
                continue
            x1, y1, x2, y2 = box.xyxy
            lines.append(
                f"{index[next(iter(box.allowed))]} {(x1 + x2) / 2 / sample.width:.6f} {(y1 + y2) / 2 / sample.height:.6f} "
                f"{(x2 - x1) / sample.width:.6f} {(y2 - y1) / sample.height:.6f}"
            )
            written += 1
        (out / "labels" / split / f"{sample.path.stem}.txt").write_text(
            "\n".join(lines) + ("\n" if lines else "")
        )
    splits = sorted({sample.split or "train" for sample in samples})
    config = {
        "path": str(out.resolve()),
        **{s: f"images/{s}" for s in splits},
        "names": dict(enumerate(classes)),
    }
    (out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"boxes": written, "skipped_without_single_class": without}
