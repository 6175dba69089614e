"""What the store holds and hands out: images, boxes, and boxes with their allowed classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """An image file known to the store."""

    image_id: int
    path: Path
    width: int
    height: int
    checksum: str
    split: str | None = None
    checked: bool = True  # its boxes are complete (no box: defect-free); False: not looked at yet
    version: int = 0  # raised by every change to its boxes or status: an edit names the one it was made on


@dataclass(frozen=True)
class BoxRecord:
    """A box as stored: geometry (always), and optionally a class label of the taxonomy version it was
    written in (``class_id`` names a class row, which may since have been split, merged or retired)."""

    box_id: int
    image_id: int
    xyxy: tuple[float, float, float, float]
    author: str
    created: str
    class_id: int | None = None
    label_version: int | None = None


@dataclass(frozen=True)
class ShownBox:
    """A stored box and the set of current classes its label means now (empty: no class); ``unnamed``:
    its class was retired as a type the taxonomy does not name (see :class:`LabelledBox`)."""

    record: BoxRecord
    allowed: frozenset[str]
    unnamed: bool = False


@dataclass(frozen=True)
class ImageState:
    """One image as a person editing it sees it: its record (with ``version`` and ``checked``) and its
    boxes, oldest first."""

    image: ImageRecord
    boxes: list[ShownBox]


@dataclass(frozen=True)
class LabelledBox:
    """A box as training sees it: geometry and the set of *current* classes its label may mean.

    ``allowed`` is empty for a box without class, one name for a full label, several for a partial
    label (an old label whose class was split and not yet relabelled): the box is known not to be
    any class outside a non-empty set. ``unnamed`` (``allowed`` then empty): its class was retired
    as a type the taxonomy does not name (yet), so it is known not to be any class current at that
    retirement: never to be named as one of them, an example of what must come out ``unknown``.
    """

    box_id: int
    xyxy: tuple[float, float, float, float]
    allowed: frozenset[str]
    unnamed: bool = False


@dataclass(frozen=True)
class Sample:
    """One image with its boxes, ready for training or evaluation."""

    image_id: int
    path: Path
    width: int
    height: int
    split: str | None
    boxes: list[LabelledBox] = field(default_factory=list)
    checked: bool = True  # False: nobody has looked, so its background is not known to be defect-free


@dataclass(frozen=True)
class ImportedBox:
    """A box read from a file, before it enters the store. ``label`` is a class name, a set of class
    names (partial label), or ``None`` (box without class); ``from_polygon``: the file held a polygon
    and this is its bounding box."""

    xyxy: tuple[float, float, float, float]
    label: str | frozenset[str] | None
    from_polygon: bool = False


@dataclass
class ImportedImage:
    """An image read from a dataset file: where it is, how big, and its boxes."""

    path: Path
    width: int
    height: int
    boxes: list[ImportedBox] = field(default_factory=list)
    split: str | None = None
    source: str = ""  # the annotation file (and object) it came from, for error messages
    checked: bool = True  # an annotation file lists it; False for a bare image nobody has labelled
