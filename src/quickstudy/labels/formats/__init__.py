"""Reading and writing label files: Pascal VOC, COCO, YOLO, class folders, bare image folders, and
pixel masks (MVTec AD, magnetic tile)."""

from quickstudy.labels.formats.coco import export_coco, import_coco, read_coco, to_coco
from quickstudy.labels.formats.folder import import_folder, import_unlabelled, read_folder, read_unlabelled
from quickstudy.labels.formats.masks import (
    import_magnetic_tile,
    import_mvtec,
    mask_boxes,
    read_magnetic_tile,
    read_mvtec,
)
from quickstudy.labels.formats.voc import export_voc, import_voc, read_voc
from quickstudy.labels.formats.yolo import export_yolo, import_yolo, read_yolo

__all__ = [
    "export_coco",
    "export_voc",
    "export_yolo",
    "import_coco",
    "import_folder",
    "import_magnetic_tile",
    "import_mvtec",
    "import_unlabelled",
    "import_voc",
    "import_yolo",
    "mask_boxes",
    "read_coco",
    "read_folder",
    "read_magnetic_tile",
    "read_mvtec",
    "read_unlabelled",
    "read_voc",
    "read_yolo",
    "to_coco",
]
