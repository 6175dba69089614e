"""Which detection found which true box, per image, and the confusion matrix those matches make.

Detections are matched to true boxes whatever their class (IoU ≥ :data:`MATCH_IOU`, best score
first, each true box once), so a box found but misnamed, or named ``unknown``, is told apart from a
box not found at all.

>>> image = ImageResult.from_rows(
...     {"image": "a.png", "boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": ["pit", "dent"]},
...     {"boxes": [[0, 0, 10, 9]], "labels": ["dent"], "scores": [0.9]},
... )
>>> image.matched_truth.tolist(), image.missed()
([0], [1])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from quickstudy.data.images import read_image
from quickstudy.errors import QuickstudyError

UNKNOWN = "unknown"
BACKGROUND = "background"
MATCH_IOU = 0.5


@dataclass
class ImageResult:
    """One image's true boxes and detections; ``matched_truth[i]`` is the index of the true box
    detection ``i`` found, -1 for a false alarm."""

    name: str
    image: Any  # a path or a uint8 [H, W] array
    true_boxes: np.ndarray
    true_labels: list[str | None]
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    matched_truth: np.ndarray

    @classmethod
    def from_rows(cls, truth: Mapping[str, Any], found: Mapping[str, Any]) -> ImageResult:
        """From a report's ground-truth row and prediction row of the same image (see ``ReportData``)."""
        image = truth.get("image")
        name = str(truth.get("name") or (Path(image).name if isinstance(image, str | os.PathLike) else ""))
        true_boxes = np.asarray(truth.get("boxes", []), dtype=np.float64).reshape(-1, 4)
        boxes = np.asarray(found.get("boxes", []), dtype=np.float64).reshape(-1, 4)
        true_labels = list(truth.get("labels", []))
        labels = [str(label) for label in found.get("labels", [])]
        scores = np.asarray(found.get("scores", []), dtype=np.float64).reshape(-1)
        if len(true_labels) != len(true_boxes) or not len(labels) == len(scores) == len(boxes):
            raise QuickstudyError(f"report: image '{name}' has boxes, labels and scores of different lengths")
        matched = match_detections(boxes, scores, true_boxes)
        return cls(name, image, true_boxes, true_labels, boxes, labels, scores, matched)

    def missed(self) -> list[int]:
        """The true boxes no detection found."""
        return sorted(set(range(len(self.true_boxes))) - set(self.matched_truth.tolist()))

    def mistakes(self) -> bool:
        """Whether a detection is a false alarm or names its true box wrongly (or ``unknown``)."""
        return any(
            truth < 0 or self.true_labels[truth] not in (None, self.labels[detection])
            for detection, truth in enumerate(self.matched_truth)
        )

    def pixels(self) -> np.ndarray:
        if isinstance(self.image, np.ndarray):
            return self.image
        return read_image(self.image)


def match_detections(boxes: np.ndarray, scores: np.ndarray, true_boxes: np.ndarray) -> np.ndarray:
    """Greedy class-agnostic matching, best score first: per detection, the index of the untaken true
    box it overlaps most at IoU ≥ :data:`MATCH_IOU`, else -1."""
    matched = np.full(len(boxes), -1, dtype=int)
    if not len(boxes) or not len(true_boxes):
        return matched
    overlaps = box_iou(torch.from_numpy(boxes), torch.from_numpy(true_boxes)).numpy()
    taken = np.zeros(len(true_boxes), dtype=bool)
    for detection in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[detection])
        if candidates.max() >= MATCH_IOU:
            best = int(candidates.argmax())
            taken[best] = True
            matched[detection] = best
    return matched


def on_clean_background(boxes: torch.Tensor, true_boxes: torch.Tensor) -> torch.Tensor:
    """Per detection (``boxes [N, 4]``), whether less than half of its area lies inside any one true
    box (``true_boxes [M, 4]``): a false alarm on clean surface, not a fragment of a true defect.

    >>> on_clean_background(torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), torch.tensor([[0.0, 0, 6, 10]]))
    tensor([False,  True])
    """
    if not len(true_boxes):
        return torch.ones(len(boxes), dtype=torch.bool)
    low = torch.maximum(boxes[:, None, :2], true_boxes[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], true_boxes[None, :, 2:])
    inside = (high - low).clamp(min=0).prod(-1).amax(1)
    return inside < 0.5 * (boxes[:, 2:] - boxes[:, :2]).prod(-1).clamp(min=1e-9)


def names_called(
    boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str], true_boxes: np.ndarray
) -> list[str | None]:
    """Per true box, the name of the detection :func:`match_detections` gives it, None when missed."""
    called: list[str | None] = [None] * len(true_boxes)
    for detection, truth in enumerate(match_detections(boxes, scores, true_boxes).tolist()):
        if truth >= 0:
            called[truth] = labels[detection]
    return called


# How a true box of a type came out: named as its type, ``unknown``, as another type, or not found.
NAMING_OUTCOMES = ("named_right", "unknown", "named_other", "missed")


def naming_outcome(true_name: str, called: str | None) -> str:
    """One of :data:`NAMING_OUTCOMES` for a box of ``true_name`` that a detection ``called`` (None: missed)."""
    if called is None:
        return "missed"
    return "named_right" if called == true_name else UNKNOWN if called == UNKNOWN else "named_other"


def confusion_counts(
    images: Sequence[ImageResult], classes: Sequence[str]
) -> tuple[list[str], list[str], np.ndarray]:
    """Rows (true class, then :data:`BACKGROUND`: false alarms), columns (named class, :data:`UNKNOWN`,
    then :data:`BACKGROUND`: misses) and counts. A true box without class counts nowhere: whether
    it was found is a detection question, not a naming one."""
    rows = list(classes)
    columns = [*classes, UNKNOWN]
    for image in images:  # names the caller did not list still get a row or a column
        rows += [str(label) for label in image.true_labels if label is not None and label not in rows]
        columns += [label for label in image.labels if label not in columns]
    rows.append(BACKGROUND)
    columns.append(BACKGROUND)
    counts = np.zeros((len(rows), len(columns)), dtype=int)
    for image in images:
        for detection, truth in enumerate(image.matched_truth):
            true_label = image.true_labels[truth] if truth >= 0 else BACKGROUND
            if true_label is None:
                continue
            counts[rows.index(true_label), columns.index(image.labels[detection])] += 1
        for truth in image.missed():
            if image.true_labels[truth] is not None:
                counts[rows.index(str(image.true_labels[truth])), columns.index(BACKGROUND)] += 1
    return rows, columns, counts
