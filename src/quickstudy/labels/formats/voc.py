"""Pascal VOC XML: one file per image (NEU-DET ships this way).

A box without class is written with an empty ``<name/>``; a partial label (an old class that was
split) as ``<name>A1|A2</name>``. Images are referenced by ``<path>``, not copied.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats._files import find_image, label_from_text, label_to_text, whole_number
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import ImportReport, Store

_ANNOTATION_DIRS = ("ANNOTATIONS", "Annotations", "annotations")
_IMAGE_DIRS = ("IMAGES", "JPEGImages", "images")


def _subfolder(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def _text(element: ET.Element, tag: str, where: str) -> str:
    node = element.find(tag)
    if node is None or node.text is None:
        raise QuickstudyError(f"{where}: missing <{tag}>")
    return node.text


def _number(element: ET.Element, tag: str, where: str) -> float:
    text = _text(element, tag, where)
    try:
        return float(text)
    except ValueError:
        raise QuickstudyError(f"{where}: <{tag}> is not a number: {text!r}") from None


def read_voc_file(xml_path: Path, image_dir: Path) -> ImportedImage:
    """Parse one VOC annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise QuickstudyError(f"{xml_path}:{line}:{column}: XML does not parse ({error.msg})") from None
    except OSError as error:
        raise QuickstudyError(f"{xml_path}: cannot read ({error.strerror})") from None
    where = str(xml_path)
    filename = root.findtext("filename") or f"{xml_path.stem}.jpg"
    path_text = root.findtext("path")
    image_path = (
        Path(path_text) if path_text and Path(path_text).exists() else find_image(image_dir, filename)
    )
    size = root.find("size")
    if size is None:
        raise QuickstudyError(f"{where}: missing <size>")
    width, height = (whole_number(_text(size, tag, where), f"<{tag}>", where) for tag in ("width", "height"))
    boxes = []
    for number, obj in enumerate(root.iter("object"), start=1):
        box = obj.find("bndbox")
        if box is None:
            raise QuickstudyError(f"{where}: object {number} has no <bndbox>")
        object_where = f"{where} object {number}"
        # VOC pixel indices are 1-based and inclusive; NEU-DET's start at 0 or 1. Keep the numbers as
        # written (pixel coordinates), as the anchors and the published results do.
        xyxy = tuple(_number(box, tag, object_where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(ImportedBox(xyxy, label_from_text(obj.findtext("name"))))  # type: ignore[arg-type]
    split = root.findtext("split") or None
    return ImportedImage(image_path, width, height, boxes, split=split, source=where)


def read_voc(src: Path) -> list[ImportedImage]:
    """Every ``*.xml`` under ``src`` (or its ``Annotations/``), images from ``JPEGImages/`` or ``IMAGES/``."""
    src = Path(src)
    if not src.is_dir():
        raise QuickstudyError(f"{src}: not a folder of Pascal VOC annotations")
    annotations = _subfolder(src, _ANNOTATION_DIRS)
    images = _subfolder(src, _IMAGE_DIRS)
    files = sorted(annotations.glob("*.xml"))
    if not files:
        raise QuickstudyError(f"{annotations}: no .xml annotation files found")
    return [read_voc_file(xml_path, images) for xml_path in files]


def import_voc(store: Store, src: str | Path, **options: object) -> ImportReport:
    """Import a Pascal VOC folder into ``store`` (one transaction). Options as :meth:`Store.import_images`."""
    return store.import_images(read_voc(Path(src)), source=f"voc:{src}", **options)  # type: ignore[arg-type]


def export_voc(store: Store, out: str | Path) -> int:
    """Write ``out/Annotations/<image>.xml`` for every image; returns the number of files."""
    folder = Path(out) / "Annotations"
    folder.mkdir(parents=True, exist_ok=True)
    for sample in store.samples():
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = sample.path.name
        ET.SubElement(root, "path").text = str(sample.path)
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(sample.width)
        ET.SubElement(size, "height").text = str(sample.height)
        ET.SubElement(size, "depth").text = "1"
        if sample.split:
            ET.SubElement(root, "split").text = sample.split
        for box in sample.boxes:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = label_to_text(box.allowed)
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box.xyxy, strict=True):
                ET.SubElement(bndbox, tag).text = f"{value:g}"
        ET.indent(root)
        ET.ElementTree(root).write(folder / f"{sample.path.stem}.xml", encoding="unicode")
    return len(list(folder.glob("*.xml")))
