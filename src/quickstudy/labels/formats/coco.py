"""COCO detection JSON.

Extensions, both ignored by other COCO tools: a box without class has ``"category_id": null``; a
partial label has ``"category_id": null`` and ``"quickstudy_allowed": ["A1", "A2"]``. Categories carry
``supercategory`` = the class they were split from (else ``"defect"``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import whole_number
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store
from quickstudy.labels.taxonomy import check_class_name


def _load(json_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise QuickstudyError(
            f"{json_path}:{error.lineno}:{error.colno}: JSON does not parse ({error.msg})"
        ) from None
    except UnicodeDecodeError as error:
        raise QuickstudyError(f"{json_path}: not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise QuickstudyError(f"{json_path}: JSON nested too deeply to read") from None
    except OSError as error:
        raise QuickstudyError(f"{json_path}: cannot read ({error.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise QuickstudyError(f"{json_path}: not a COCO file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise QuickstudyError(f"{json_path}: '{key}' must be a list")
    return data


def _refuse_repeated_ids(entries: list[Any], what: str, json_path: Path) -> None:
    """Two entries with one id would silently become one (an image's boxes moved to another)."""
    ids = Counter(entry["id"] for entry in entries if isinstance(entry, dict) and _is_id(entry.get("id")))
    repeated = sorted((str(i) for i, n in ids.items() if n > 1), key=lambda text: (len(text), text))
    if repeated:
        shown = ", ".join(repeated[:10]) + (f" and {len(repeated) - 10} more" if len(repeated) > 10 else "")
        raise QuickstudyError(f"{json_path}: {what} ids used more than once: {shown}")


def _is_id(value: object) -> bool:
    return isinstance(value, int | str)


def _label(annotation: dict[str, Any], names: dict[Any, str], where: str) -> str | frozenset[str] | None:
    category = annotation.get("category_id")
    if category is not None:
        if not _is_id(category) or category not in names:
            raise QuickstudyError(f"{where}: unknown category_id {category!r}")
        return names[category]
    allowed = annotation.get("quickstudy_allowed")
    if allowed is None or allowed == []:
        return None
    if not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed):
        raise QuickstudyError(f"{where}: quickstudy_allowed must be a list of class names, got {allowed!r}")
    return frozenset(check_class_name(name, where) for name in allowed)


def read_coco(json_path: Path, image_dir: Path | None = None) -> list[ImportedImage]:
    json_path = Path(json_path)
    data = _load(json_path)
    folder = image_dir or json_path.parent
    _refuse_repeated_ids(data.get("categories", []), "category", json_path)
    names: dict[Any, str] = {}
    for category in data.get("categories", []):
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise QuickstudyError(f"{json_path}: category without id: {category!r}")
        name = category.get("name")
        if not isinstance(name, str):
            raise QuickstudyError(f"{json_path} category {category['id']}: name must be text, got {name!r}")
        names[category["id"]] = check_class_name(name, f"{json_path} category {category['id']}")
    _refuse_repeated_ids(data["images"], "image", json_path)
    _refuse_repeated_ids(data.get("annotations", []), "annotation", json_path)
    images: dict[Any, ImportedImage] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or not _is_id(entry.get("id")) or "file_name" not in entry:
            raise QuickstudyError(f"{json_path}: image entry lacks id or file_name: {str(entry)[:200]}")
        where = f"{json_path} image {entry['id']}"
        path = Path(str(entry["file_name"]))
        images[entry["id"]] = ImportedImage(
            path if path.is_absolute() else folder / path,
            whole_number(entry.get("width"), "width", where),
            whole_number(entry.get("height"), "height", where),
            split=entry.get("split"),
            source=where,
        )
    for number, annotation in enumerate(data.get("annotations", [])):
        where = f"{json_path} annotation {annotation.get('id', number) if isinstance(annotation, dict) else number}"
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            image = images[annotation["image_id"]]
        except (KeyError, TypeError, ValueError):
            raise QuickstudyError(f"{where}: needs bbox [x, y, w, h] and a known image_id") from None
        image.boxes.append(ImportedBox((x, y, x + w, y + h), _label(annotation, names, where)))
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
