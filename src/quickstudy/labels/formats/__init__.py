"""Reading and writing label files: Pascal VOC, COCO, YOLO, and class folders."""

from quickstudy.labels.formats.coco import export_coco, import_coco, read_coco, to_coco
from quickstudy.labels.formats.folder import import_folder, read_folder
from quickstudy.labels.formats.voc import export_voc, import_voc, read_voc
from quickstudy.labels.formats.yolo import export_yolo, import_yolo, read_yolo

__all__ = [
    "export_coco",
    "export_voc",
    "export_yolo",
    "import_coco",
    "import_folder",
    "import_voc",
    "import_yolo",
    "read_coco",
    "read_folder",
    "read_voc",
    "read_yolo",
    "to_coco",
]
