"""COCO detection JSON.

Extensions, both ignored by other COCO tools: a box without class has ``"category_id": null``; a
partial label has ``"category_id": null`` and ``"quickstudy_allowed": ["A1", "A2"]``. Categories carry
``supercategory`` = the class they were split from (else ``"defect"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quickstudy.errors import QuickstudyError
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store


def read_coco(json_path: Path, image_dir: Path | None = None) -> list[ImportedImage]:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise QuickstudyError(
            f"{json_path}:{error.lineno}:{error.colno}: JSON does not parse ({error.msg})"
        ) from None
    except OSError as error:
        raise QuickstudyError(f"{json_path}: cannot read ({error.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise QuickstudyError(f"{json_path}: not a COCO file (no 'images' list)")
    folder = image_dir or json_path.parent
    names = {}
    for category in data.get("categories", []):
        try:
            names[category["id"]] = category["name"]
        except (KeyError, TypeError):
            raise QuickstudyError(f"{json_path}: category without id or name: {category!r}") from None
    images: dict[Any, ImportedImage] = {}
    for entry in data["images"]:
        try:
            path = Path(entry["file_name"])
            images[entry["id"]] = ImportedImage(
                path if path.is_absolute() else folder / path,
                int(entry["width"]),
                int(entry["height"]),
                split=entry.get("split"),
                source=f"{json_path} image {entry['id']}",
            )
        except (KeyError, TypeError, ValueError):
            raise QuickstudyError(
                f"{json_path}: image entry lacks id, file_name, width or height: {entry!r}"
            ) from None
    for number, annotation in enumerate(data.get("annotations", [])):
        where = f"{json_path} annotation {annotation.get('id', number) if isinstance(annotation, dict) else number}"
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            image = images[annotation["image_id"]]
        except (KeyError, TypeError, ValueError):
            raise QuickstudyError(f"{where}: needs bbox [x, y, w, h] and a known image_id") from None
        category = annotation.get("category_id")
        label: str | frozenset[str] | None
        if category is None:
            allowed = annotation.get("quickstudy_allowed") or []
            label = frozenset(allowed) if allowed else None
        elif category in names:
            label = names[category]
        else:
            raise QuickstudyError(f"{where}: unknown category_id {category!r}")
        image.boxes.append(ImportedBox((x, y, x + w, y + h), label))
    return list(images.values())


def import_coco(
    store: Store, json_path: str | Path, image_dir: str | Path | None = None, **options: object
) -> ImportReport:
    """Import a COCO JSON file (one transaction). Options as :meth:`Store.import_images`."""
    images = read_coco(Path(json_path), Path(image_dir) if image_dir else None)
    return store.import_images(images, source=f"coco:{json_path}", **options)  # type: ignore[arg-type]


def to_coco(store: Store, split: str | None = None) -> dict[str, Any]:
    """The store (or one split) as a COCO dict, category ids 1..C in taxonomy order."""
    classes = store.classes()
    category_ids = {name: number for number, name in enumerate(classes, start=1)}
    parents = store.taxonomy.parents()
    images, annotations = [], []
    for sample in store.samples(split):
        images.append(
            {
                "id": sample.image_id,
                "file_name": str(sample.path),
                "width": sample.width,
                "height": sample.height,
                "split": sample.split,
            }
        )
        for box in sample.boxes:
            x1, y1, x2, y2 = box.xyxy
            annotation: dict[str, Any] = {
                "id": box.box_id,
                "image_id": sample.image_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
                "category_id": category_ids[next(iter(box.allowed))] if len(box.allowed) == 1 else None,
            }
            if len(box.allowed) > 1:
                annotation["quickstudy_allowed"] = sorted(box.allowed)
            annotations.append(annotation)
    categories = [
        {"id": number, "name": name, "supercategory": parents.get(name, "defect")}
        for name, number in category_ids.items()
    ]
    return {
        "info": {
            "description": f"quickstudy export of {store.path}",
            "taxonomy_version": store.taxonomy_version(),
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def export_coco(store: Store, out: str | Path) -> Path:
    """Write ``out`` (a ``.json`` file, or ``out/annotations.json`` for a folder)."""
    out = Path(out)
    path = out if out.suffix == ".json" else out / "annotations.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_coco(store)))
    return path
