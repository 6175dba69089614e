"""YOLO txt + data.yaml (Ultralytics layout: ``images/<split>/x.jpg`` beside ``labels/<split>/x.txt``).

YOLO has no way to write a box without class or a partial label: export refuses them by default,
naming how many, and with ``skip_unlabelled=True`` leaves them out and says so in its result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import IMAGE_SUFFIXES, image_header_size
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store


def _class_names(config: dict[str, Any], where: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        return [str(names[key]) for key in sorted(names)]
    if isinstance(names, list):
        return [str(name) for name in names]
    raise QuickstudyError(f"{where}: data.yaml needs 'names' (a list or an index -> name mapping)")


def read_yolo(root: Path) -> list[ImportedImage]:
    root = Path(root)
    config_path = root / "data.yaml"
    try:
        config = yaml.safe_load(config_path.read_text())
    except OSError:
        raise QuickstudyError(f"{config_path}: not found (a YOLO dataset needs data.yaml)") from None
    except yaml.YAMLError as error:
        raise QuickstudyError(f"{config_path}: YAML does not parse ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise QuickstudyError(f"{config_path}: expected a mapping")
    names = _class_names(config, config_path)
    images = []
    for image_path in sorted((root / "images").rglob("*")):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        relative = image_path.relative_to(root / "images")
        label_path = (root / "labels" / relative).with_suffix(".txt")
        width, height = image_header_size(image_path)
        split = (
            relative.parts[0]
            if len(relative.parts) > 1 and relative.parts[0] in ("train", "val", "test")
            else None
        )
        image = ImportedImage(image_path, width, height, split=split, source=str(label_path))
        lines = label_path.read_text().splitlines() if label_path.exists() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                fields = line.split()
                cls, values = int(fields[0]), [float(v) for v in fields[1:5]]
                if len(values) != 4:
                    raise ValueError
            except ValueError:
                raise QuickstudyError(
                    f"{label_path}:{number}: expected 'class cx cy w h', got {line!r}"
                ) from None
            if not 0 <= cls < len(names):
                raise QuickstudyError(f"{label_path}:{number}: class index {cls} not in data.yaml names")
            cx, cy, w, h = values
            image.boxes.append(
                ImportedBox(
                    (
                        (cx - w / 2) * width,
                        (cy - h / 2) * height,
                        (cx + w / 2) * width,
                        (cy + h / 2) * height,
                    ),
                    names[cls],
                )
            )
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
