"""Detection metrics: COCO AP through pycocotools, class-agnostic AR@100, image-level precision/recall.

Inputs are plain per-image lists so any detector can be scored: ground truth ``(boxes [M, 4] xyxy,
labels [M])`` and predictions ``{"boxes", "scores", "labels"}`` (numpy arrays or tensors), labels
indexing ``classes``.

>>> gt = [(np.array([[0, 0, 10, 10.0]]), np.array([0]))]
>>> pred = [{"boxes": np.array([[0, 0, 10, 10.0]]), "scores": np.array([0.9]), "labels": np.array([0])}]
>>> round(coco_metrics(gt, pred, ["pit"])["mAP50"], 3)
1.0

:func:`evaluate_predictions` is the one computation behind ``quickstudy eval``: its ``metrics`` are
what ``--json`` prints and what the HTML report shows, beside the curves the report draws.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import nms

from quickstudy.evaluate.operating import recall_at_false_alarm_rate

GroundTruth = tuple[Any, Any]  # (boxes [M, 4] xyxy, labels [M])
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # where pycocotools reads precision off the PR curve


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _coco_eval(
    gts: Sequence[GroundTruth], preds: Sequence[Mapping[str, Any]], n_classes: int
) -> COCOeval | None:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, ((boxes, labels), pred) in enumerate(zip(gts, preds, strict=True), start=1):
        images.append({"id": image_id})
        for box, label in zip(_np(boxes).reshape(-1, 4), _np(labels).reshape(-1), strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        pboxes, scores, plabels = _np(pred["boxes"]).reshape(-1, 4), _np(pred["scores"]), _np(pred["labels"])
        for box, score, label in zip(pboxes, scores.reshape(-1), plabels.reshape(-1), strict=True):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    if not annotations:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c + 1} for c in range(n_classes)],
        }
        truth.createIndex()
        found = truth.loadRes(detections) if detections else COCO()
        if not detections:
            found.dataset = {"images": images, "annotations": [], "categories": truth.dataset["categories"]}
            found.createIndex()
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


@dataclass
class DetectionEvaluation:
    """Detections scored against ground truth, once: ``metrics`` is what ``quickstudy eval --json``
    prints and what the HTML report renders; the arrays are what the report's figures draw."""

    classes: list[str]
    metrics: dict[str, Any]
    precision_curves: dict[str, np.ndarray]  # per class: precision at RECALL_POINTS, IoU 0.5; NaN: no truth
    image_scores: np.ndarray  # [N, C] each image's highest detection score per class (0 without one)
    image_truth: np.ndarray  # [N, C] whether the image holds a true box of the class


def evaluate_predictions(
    gts: Sequence[GroundTruth],
    preds: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    operating: Mapping[str, float],
    agnostic_gts: Sequence[GroundTruth] | None = None,
    defect_free: Sequence[bool] | None = None,
) -> DetectionEvaluation:
    """:func:`coco_metrics` with per-class ``AP`` (@[.5:.95]), :func:`image_level` at the
    ``operating`` thresholds (echoed as ``operating_thresholds``), per class the ``true_boxes``
    and ``true_images`` (images holding one) the numbers rest on, and :func:`defect_present`.
    ``defect_free`` marks the images checked to hold no defect (the false alarms are counted on them)."""
    metrics, curves = _coco_scores(gts, preds, classes, agnostic_gts)
    truth = image_truth(gts, len(classes))
    metrics.update(image_level(gts, preds, classes, operating))
    metrics["operating_thresholds"] = {name: float(operating[name]) for name in classes}
    boxes = np.zeros(len(classes), dtype=np.int64)
    for _, labels in gts:
        boxes += np.bincount(_np(labels).reshape(-1).astype(np.int64), minlength=len(classes))
    metrics["true_boxes"] = {name: int(boxes[c]) for c, name in enumerate(classes)}
    metrics["true_images"] = {name: int(truth[:, c].sum()) for c, name in enumerate(classes)}
    scores = image_scores([_as_tensors(p) for p in preds], len(classes)).numpy()
    defective = np.array([len(_np(boxes)) > 0 for boxes, _ in (agnostic_gts or gts)], dtype=bool)
    metrics["defect_present"] = defect_present(scores, classes, operating, defective, defect_free)
    return DetectionEvaluation(list(classes), metrics, curves, scores, truth)


def defect_present(
    scores: np.ndarray,
    classes: Sequence[str],
    operating: Mapping[str, float],
    defective: np.ndarray,
    defect_free: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Image-level "a defect is here" (any type): flagged when a detection of any class reaches that
    class's operating threshold. Its precision and recall; with ``defect_free``, the false-alarm rate
    on those images and, scoring each image by its highest detection, the recall at a 1% false-alarm
    rate (:func:`~quickstudy.evaluate.operating.recall_at_false_alarm_rate`)."""
    thresholds = np.array([operating[name] for name in classes], dtype=np.float64)
    flagged = np.asarray((scores >= thresholds[None, :]).any(axis=1), dtype=bool)
    true_flags = int((flagged & defective).sum())
    result: dict[str, Any] = {
        "precision": true_flags / int(flagged.sum()) if flagged.any() else None,
        "recall": true_flags / int(defective.sum()) if defective.any() else None,
        "defective_images": int(defective.sum()),
    }
    if defect_free is not None:
        free = np.asarray(defect_free, dtype=bool)
        result["defect_free_images"] = int(free.sum())
        result["false_alarm_rate"] = float(flagged[free].mean()) if free.any() else None
        best = scores.max(axis=1) if len(classes) else np.zeros(len(scores))
        at_one_percent = recall_at_false_alarm_rate(best, defective, free, 0.01)
        result["recall_at_1pct_false_alarms"] = at_one_percent["recall"]
        result["threshold_at_1pct_false_alarms"] = at_one_percent["threshold"]
    return result


def coco_metrics(
    gts: Sequence[GroundTruth],
    preds: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    agnostic_gts: Sequence[GroundTruth] | None = None,
) -> dict[str, Any]:
    """``mAP`` (@[.5:.95]), ``mAP50``, per-class ``AP50`` and ``AP`` (None for a class without ground
    truth) and, with classes ignored (duplicates across classes merged by NMS at 0.5) against
    ``agnostic_gts`` (default: ``gts``; may hold boxes without class): ``AR100_agnostic``
    (@[.5:.95]), ``AR100_agnostic_50`` (IoU 0.5) and ``AP50_agnostic`` — where these are far above
    mAP50 the boxes are found and misnamed; where they are low, the boxes are not found."""
    return _coco_scores(gts, preds, classes, agnostic_gts)[0]


def _coco_scores(
    gts: Sequence[GroundTruth],
    preds: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    agnostic_gts: Sequence[GroundTruth] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`coco_metrics` and, per class, its precision curve at IoU 0.5 (NaN without truth)."""
    agnostic_metrics = {"AR100_agnostic": 0.0, "AR100_agnostic_50": 0.0, "AP50_agnostic": 0.0}
    evaluation = _coco_eval(gts, preds, len(classes))
    if evaluation is None:
        undefined = dict.fromkeys(classes)
        curves = {name: np.full(len(RECALL_POINTS), np.nan) for name in classes}
        return {"mAP": 0.0, "mAP50": 0.0, "AP50": undefined, "AP": undefined, **agnostic_metrics}, curves
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # [IoU, recall, class], all areas, 100 dets
    ap50: dict[str, float | None] = {}
    ap: dict[str, float | None] = {}
    curves = {}
    for c, name in enumerate(classes):
        defined = precision[:, :, c] > -1  # -1: the class has no true box
        ap50[name] = float(precision[0, :, c][defined[0]].mean()) if defined[0].any() else None
        ap[name] = float(precision[:, :, c][defined].mean()) if defined.any() else None
        curves[name] = np.where(defined[0], precision[0, :, c], np.nan)
    agnostic_truth = [
        (boxes, np.zeros(len(_np(labels).reshape(-1)), dtype=int)) for boxes, labels in (agnostic_gts or gts)
    ]
    agnostic = _coco_eval(agnostic_truth, [merge_classes(p) for p in preds], 1)
    if agnostic is not None:
        agnostic_metrics = {
            "AR100_agnostic": max(float(agnostic.stats[8]), 0.0),
            "AR100_agnostic_50": max(float(agnostic.eval["recall"][0, 0, 0, -1]), 0.0),  # IoU 0.5, all areas
            "AP50_agnostic": max(float(agnostic.stats[1]), 0.0),
        }
    metrics = {
        "mAP": max(float(evaluation.stats[0]), 0.0),
        "mAP50": max(float(evaluation.stats[1]), 0.0),
        "AP50": ap50,
        "AP": ap,
        **agnostic_metrics,
    }
    return metrics, curves


def _as_tensors(pred: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {
        "labels": torch.as_tensor(_np(pred["labels"]), dtype=torch.int64).reshape(-1),
        "scores": torch.as_tensor(_np(pred["scores"]), dtype=torch.float32).reshape(-1),
    }


def merge_classes(pred: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One image's detections with classes ignored, as the class-agnostic metrics see them: NMS at
    0.5 across classes, the best 100, every label 0."""
    boxes = torch.as_tensor(_np(pred["boxes"]), dtype=torch.float32).reshape(-1, 4)
    scores = torch.as_tensor(_np(pred["scores"]), dtype=torch.float32).reshape(-1)
    keep = nms(boxes, scores, 0.5)[:100]
    return {"boxes": boxes[keep].numpy(), "scores": scores[keep].numpy(), "labels": np.zeros(len(keep), int)}


def image_truth(gts: Sequence[GroundTruth], n_classes: int) -> np.ndarray:
    """``[N, C]`` bool: whether each image holds a box of each class."""
    truth = np.zeros((len(gts), n_classes), dtype=bool)
    for i, (_, labels) in enumerate(gts):
        truth[i, _np(labels).reshape(-1).astype(np.int64)] = True
    return truth


def image_scores(preds: Sequence[Mapping[str, torch.Tensor]], n_classes: int) -> torch.Tensor:
    """``[N, C]``: each image's highest detection score per class (0 without one)."""
    scores = torch.zeros(len(preds), n_classes)
    for i, pred in enumerate(preds):
        if pred["labels"].numel():
            scores[i].scatter_reduce_(0, pred["labels"], pred["scores"], reduce="amax")
    return scores


def image_level(
    gts: Sequence[GroundTruth],
    preds: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    thresholds: Mapping[str, float],
) -> dict[str, dict[str, float | None]]:
    """Per class, precision and recall of "the image holds a box of class c", an image being
    predicted positive when it has a detection of c scoring at least ``thresholds[c]``."""
    precision: dict[str, float | None] = {}
    recall: dict[str, float | None] = {}
    truth = image_truth(gts, len(classes))
    for c, name in enumerate(classes):
        actual = truth[:, c]
        predicted = np.array(
            [
                bool(
                    (
                        (_np(p["labels"]).reshape(-1) == c)
                        & (_np(p["scores"]).reshape(-1) >= thresholds[name])
                    ).any()
                )
                for p in preds
            ],
            dtype=bool,
        )
        tp = int((actual & predicted).sum())
        precision[name] = tp / int(predicted.sum()) if predicted.any() else None
        recall[name] = tp / int(actual.sum()) if actual.any() else None
    return {"image_precision": precision, "image_recall": recall}
