"""Operating thresholds: the lowest score threshold that still meets a requested precision, and its recall.

A factory engineer asks first "if I may accept 1 false alarm in 100, how many defects do I miss?".
:func:`threshold_for_precision` answers it for one score list (an image is called positive when
its score is >= the threshold); :func:`operating_points` does it per class (one class against
the rest) and for "defect present". Plain numpy, so any learner or the detector can use it.

Choose the threshold on validation scores and apply it to test scores with :func:`precision_recall_at`;
picking it on the test scores themselves gives the usual "recall at P% precision" of the curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFECT_PRESENT = "defect present"


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it gives: ``reached`` is False when no threshold meets the target precision.

    Example:
        >>> point = threshold_for_precision([0.9, 0.8, 0.7, 0.2], [True, True, False, True], 0.99)
        >>> point.threshold, point.precision, point.recall
        (0.8, 1.0, 0.6666666666666666)
    """

    threshold: float
    precision: float
    recall: float
    reached: bool
    positives: int
    flagged: int

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """JSON-safe: the threshold and precision of a point not reached are None (not inf, NaN)."""
        return {
            "threshold": self.threshold if self.reached else None,
            "precision": self.precision if self.reached else None,
            "recall": self.recall,
            "reached": self.reached,
            "positives": self.positives,
            "flagged": self.flagged,
        }


def _checked(
    scores: Sequence[float] | np.ndarray, is_positive: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, ...]:
    score_array = np.asarray(scores, dtype=np.float64).ravel()
    positive_array = np.asarray(is_positive, dtype=bool).ravel()
    if score_array.shape != positive_array.shape:
        raise ValueError(f"{score_array.size} scores but {positive_array.size} labels")
    if np.isnan(score_array).any():
        raise ValueError("scores hold NaN")
    return score_array, positive_array


def threshold_for_precision(
    scores: Sequence[float] | np.ndarray, is_positive: Sequence[bool] | np.ndarray, target_precision: float
) -> OperatingPoint:
    """The threshold with the highest recall among those whose precision is at least ``target_precision``.

    Precision is not monotone in the threshold, so every distinct score is tried. When none
    reaches the target the point has ``reached=False``, threshold ``inf``, nothing flagged, recall 0.
    """
    if not 0 < target_precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    score_array, positive_array = _checked(scores, is_positive)
    positives = int(positive_array.sum())
    order = np.argsort(-score_array, kind="stable")
    sorted_scores, sorted_positive = score_array[order], positive_array[order]
    true_positives = np.cumsum(sorted_positive)
    flagged = np.arange(1, len(sorted_scores) + 1)
    # Only the last index of a run of equal scores is a real threshold: ties are flagged together.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    precision = true_positives / flagged
    ok = last_of_tie & (precision >= target_precision - 1e-12)
    if positives == 0 or not ok.any():
        return OperatingPoint(math.inf, math.nan, 0.0, False, positives, 0)
    # Highest recall = most true positives; among equals, the fewest flagged (highest threshold).
    candidates = np.flatnonzero(ok)
    best = candidates[np.lexsort((flagged[candidates], -true_positives[candidates]))[0]]
    return OperatingPoint(
        threshold=float(sorted_scores[best]),
        precision=float(precision[best]),
        recall=float(true_positives[best] / positives),
        reached=True,
        positives=positives,
        flagged=int(flagged[best]),
    )


def precision_recall_at(
    scores: Sequence[float] | np.ndarray, is_positive: Sequence[bool] | np.ndarray, threshold: float
) -> tuple[float, float]:
    """``(precision, recall)`` when every score >= ``threshold`` is flagged (precision NaN if none is)."""
    precision, recall = precision_recall_sweep(scores, is_positive, [threshold])
    return float(precision[0]), float(recall[0])


def precision_recall_sweep(
    scores: Sequence[float] | np.ndarray,
    is_positive: Sequence[bool] | np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`precision_recall_at` for each of ``thresholds``: two arrays of their length (precision
    NaN where nothing is flagged, recall NaN where nothing is positive).

    Example:
        >>> precision_recall_sweep([0.9, 0.6, 0.3], [True, False, True], [0.5, 0.95])
        (array([0.5, nan]), array([0.5, 0. ]))
    """
    score_array, positive_array = _checked(scores, is_positive)
    flagged = score_array[None, :] >= np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    true_positives = (flagged & positive_array).sum(axis=1)
    n_flagged = flagged.sum(axis=1)
    precision = np.where(n_flagged > 0, true_positives / np.maximum(n_flagged, 1), np.nan)
    positives = int(positive_array.sum())
    recall = true_positives / positives if positives else np.full(len(n_flagged), np.nan)
    return precision, recall


def operating_points(
    class_scores: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    target_precision: float,
    defect_scores: Sequence[float] | np.ndarray | None = None,
) -> dict[str, OperatingPoint]:
    """Per class (that class against all others) and for :data:`DEFECT_PRESENT`.

    ``class_scores`` is ``[N, C]`` (higher: more likely that class), ``labels`` ``[N]`` the true
    class index, ``-1`` for an image without a defect. "Defect present" scores each image by
    ``defect_scores`` when given, else by its highest class score.

    Example:
        >>> scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.5]])
        >>> points = operating_points(scores, [0, 1, 1, -1], ["a", "b"], 0.99)
        >>> {name: round(p.recall, 2) for name, p in points.items()}
        {'a': 1.0, 'b': 0.5, 'defect present': 1.0}
    """
    score_matrix = np.asarray(class_scores, dtype=np.float64)
    label_array = np.asarray(labels, dtype=np.int64).ravel()
    if score_matrix.ndim != 2 or score_matrix.shape != (len(label_array), len(class_names)):
        raise ValueError(
            f"class scores of shape {score_matrix.shape} do not fit {len(label_array)} labels "
            f"and {len(class_names)} classes"
        )
    points = {
        name: threshold_for_precision(score_matrix[:, c], label_array == c, target_precision)
        for c, name in enumerate(class_names)
    }
    present = score_matrix.max(axis=1) if defect_scores is None else defect_scores
    points[DEFECT_PRESENT] = threshold_for_precision(present, label_array >= 0, target_precision)
    return points


def recall_at_false_alarm_rate(
    scores: Sequence[float] | np.ndarray,
    defective: Sequence[bool] | np.ndarray,
    defect_free: Sequence[bool] | np.ndarray,
    max_false_alarm_rate: float,
) -> dict[str, float | None]:
    """The lowest threshold that flags at most ``max_false_alarm_rate`` of the defect-free images, and
    the share of defective images it flags: the line's question "at one false alarm in a hundred good
    parts, how many bad parts do I catch?". Images neither defective nor known defect-free are ignored.

    Example:
        >>> point = recall_at_false_alarm_rate([0.9, 0.7, 0.4, 0.8, 0.1], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], 0.0)
        >>> round(point["threshold"], 6), round(point["recall"], 3), point["false_alarm_rate"]
        (0.8, 0.333, 0.0)
    """
    score_array = np.asarray(scores, dtype=np.float64).ravel()
    bad = np.asarray(defective, dtype=bool).ravel()
    good = np.asarray(defect_free, dtype=bool).ravel()
    if not good.any() or not bad.any():
        return {"threshold": None, "recall": None, "false_alarm_rate": None}
    good_scores = np.sort(score_array[good])[::-1]
    allowed = int(np.floor(max_false_alarm_rate * len(good_scores) + 1e-9))
    # flag strictly above the (allowed + 1)-th highest good score: at most `allowed` good images flagged
    ceiling = good_scores[allowed] if allowed < len(good_scores) else -np.inf
    threshold = float(np.nextafter(ceiling, np.inf)) if np.isfinite(ceiling) else float(good_scores.min())
    return {
        "threshold": threshold,
        "recall": float((score_array[bad] >= threshold).mean()),
        "false_alarm_rate": float((score_array[good] >= threshold).mean()),
    }
