"""Scoring a detector on a split of a label store (the ``quickstudy eval`` report).

>>> report = evaluate_detector(Predictor.from_dir("runs/neu"), store.samples("test"))  # doctest: +SKIP
>>> report["mAP50"], report["AP50"]["crazing"]  # doctest: +SKIP

Ground truth per class is every box whose allowed set is exactly one of the model's classes; a box
without class or with a partial label counts only for the class-agnostic recall (AR100_agnostic).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from quickstudy.detect.predictor import Detection, Predictor
from quickstudy.evaluate.detection import DetectionEvaluation, evaluate_predictions, image_scores, image_truth
from quickstudy.evaluate.matching import NAMING_OUTCOMES, UNKNOWN, names_called, naming_outcome
from quickstudy.evaluate.operating import DEFECT_PRESENT, threshold_for_precision


def ground_truth(samples: Sequence[Any], classes: Sequence[str]) -> tuple[list, list]:
    """(per-class ground truth, class-agnostic ground truth), per sample ``(boxes, labels)``."""
    index = {name: i for i, name in enumerate(classes)}
    named, agnostic = [], []
    for sample in samples:
        boxes = [b for b in sample.boxes if len(b.allowed) == 1 and next(iter(b.allowed)) in index]
        named.append(
            (
                np.array([b.xyxy for b in boxes], dtype=np.float64).reshape(-1, 4),
                np.array([index[next(iter(b.allowed))] for b in boxes], dtype=np.int64),
            )
        )
        agnostic.append(
            (
                np.array([b.xyxy for b in sample.boxes], dtype=np.float64).reshape(-1, 4),
                np.zeros(len(sample.boxes)),
            )
        )
    return named, agnostic


def proposal_recall(
    truth: Sequence[Sequence[Sequence[float]]], proposals: Sequence[dict[str, torch.Tensor]], iou: float = 0.5
) -> float:
    """The share of the true boxes (per image, ``(x1, y1, x2, y2)``) that one of the same image's
    proposals (:meth:`Predictor.proposals`) overlaps at IoU ≥ ``iou``; 0 when there are none.

    >>> proposal_recall([[(0, 0, 10, 10), (20, 20, 30, 30)]], [{"boxes": torch.tensor([[0.0, 0, 10, 11]])}])
    0.5
    """
    found = total = 0
    for boxes, proposal in zip(truth, proposals, strict=True):
        total += len(boxes)
        if len(boxes) and proposal["boxes"].numel():
            overlaps = box_iou(torch.tensor(boxes, dtype=torch.float32), proposal["boxes"].float())
            found += int((overlaps.amax(1) >= iou).sum())
    return found / max(1, total)


def box_names(
    samples: Sequence[Any], detections: Sequence[Sequence[Detection]]
) -> dict[str, Counter[str | None]]:
    """Per type (every box whose allowed set is that one name, a type the model lacks included), what the
    named ``detections`` (as ``predict`` gives them) call its boxes: a class name, ``unknown``, or None
    (missed), matched as the report matches (:func:`~quickstudy.evaluate.matching.names_called`)."""
    names: dict[str, Counter[str | None]] = {}
    for sample, found in zip(samples, detections, strict=True):
        called = names_called(
            np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4),
            np.array([d.score for d in found], dtype=np.float64),
            [d.class_name for d in found],
            np.array([b.xyxy for b in sample.boxes], dtype=np.float64).reshape(-1, 4),
        )
        for box, as_called in zip(sample.boxes, called, strict=True):
            if len(box.allowed) == 1:
                (name,) = box.allowed
                names.setdefault(name, Counter())[as_called] += 1
    return names


def box_naming(samples: Sequence[Any], detections: Sequence[Sequence[Detection]]) -> dict[str, Counter[str]]:
    """Per type, how many of its boxes :func:`box_names` finds called right, ``unknown``, another type,
    or missed (:data:`~quickstudy.evaluate.matching.NAMING_OUTCOMES`)."""
    counts: dict[str, Counter[str]] = {}
    for name, called in box_names(samples, detections).items():
        outcomes = counts.setdefault(name, Counter())
        for as_called, n in called.items():
            outcomes[naming_outcome(name, as_called)] += n
    return counts


def naming_metrics(counts: dict[str, Counter[str]], classes: Sequence[str]) -> dict[str, Any]:
    """``naming``: per type its boxes and the share of each outcome, and whether the model knows the
    type; ``called_unknown``: the share of the known types' boxes and of the other types' boxes
    reported ``unknown`` (None where there are none) — the open-set test's two sides."""
    naming = {
        name: {
            "known": name in classes,
            "boxes": sum(count.values()),
            **{key: count[key] / sum(count.values()) for key in NAMING_OUTCOMES},
        }
        for name, count in sorted(counts.items())
    }

    def unknown_share(known: bool) -> float | None:
        chosen = [count for name, count in counts.items() if (name in classes) == known]
        total = sum(sum(count.values()) for count in chosen)
        return sum(count[UNKNOWN] for count in chosen) / total if total else None

    return {
        "naming": naming,
        "called_unknown": {"known_types": unknown_share(True), "new_types": unknown_share(False)},
    }


def at_target_precision(
    outputs: Sequence[dict[str, Any]], named: Sequence[tuple], classes: Sequence[str], target: float
) -> dict[str, dict[str, Any]]:
    """Per class ("the image holds a box of class c") and for "defect present": the image-score
    threshold with the highest recall among those reaching precision ``target`` on these images,
    with its precision and recall (``reached`` False when no threshold gets there)."""
    scores = image_scores(outputs, len(classes)).numpy()
    present = image_truth(named, len(classes))
    points = {
        name: threshold_for_precision(scores[:, c], present[:, c], target) for c, name in enumerate(classes)
    }
    any_present = np.asarray(present.any(axis=1), dtype=bool)
    points[DEFECT_PRESENT] = threshold_for_precision(scores.max(axis=1), any_present, target)
    return {name: point.as_dict() for name, point in points.items()}


def evaluate_detector(
    predictor: Predictor, samples: Sequence[Any], target_precision: float | None = None
) -> dict[str, Any]:
    """COCO mAP, mAP50, per-class AP50 and AP, class-agnostic AR@100, image-level precision/recall per
    class at the model's operating thresholds, how each type's boxes are named (:func:`naming_metrics`,
    types the model lacks included), ms per image; with ``target_precision``, also
    ``at_target_precision`` (:func:`at_target_precision`, thresholds picked on these images)."""
    return detector_evaluation(predictor, samples, target_precision)[0].metrics


def detector_evaluation(
    predictor: Predictor, samples: Sequence[Any], target_precision: float | None = None
) -> tuple[DetectionEvaluation, list[list[Detection]]]:
    """:func:`evaluate_detector`'s metrics with the curves an HTML report draws, and each image's
    detections as ``predict`` names them (from the same forward pass)."""
    classes = predictor.classes
    started = time.perf_counter()
    outputs = predictor.raw([s.path for s in samples])
    ms_per_image = 1000 * (time.perf_counter() - started) / max(1, len(samples))
    named, agnostic = ground_truth(samples, classes)
    defect_free = [s.checked and not s.boxes for s in samples]
    evaluation = evaluate_predictions(named, outputs, classes, predictor.operating, agnostic, defect_free)
    if target_precision is not None:
        evaluation.metrics["at_target_precision"] = {
            "target": target_precision,
            **at_target_precision(outputs, named, classes, target_precision),
        }
    detections = [predictor.name_detections(out, None) for out in outputs]
    evaluation.metrics.update(naming_metrics(box_naming(samples, detections), classes))
    evaluation.metrics["ms_per_image"] = ms_per_image
    evaluation.metrics["n_images"] = len(samples)
    return evaluation, detections
