"""The report's figures (matplotlib): each draws numbers computed elsewhere, never its own.

Curves and markers come from a :class:`~quickstudy.evaluate.detection.DetectionEvaluation` (the
numbers ``quickstudy eval --json`` prints), confusion counts and example boxes from
:mod:`quickstudy.evaluate.matching`. :func:`png` turns a figure into image bytes and closes it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from quickstudy.evaluate.detection import RECALL_POINTS, DetectionEvaluation
from quickstudy.evaluate.matching import ImageResult
from quickstudy.evaluate.operating import precision_recall_sweep

# Image-level thresholds the sweep is drawn at; 0 is left out: it would flag images without a detection.
SWEEP_THRESHOLDS = np.linspace(0.0, 1.0, 201)[1:]
# An example image shows its highest-scoring false alarms only: dozens of boxes hide the image.
FALSE_ALARMS_DRAWN = 5
RIGHT, MISNAMED, FALSE_ALARM, MISSED = "#1a9850", "#f28e2b", "#d62728", "#f5d40f"


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _colours(classes: Sequence[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(index % 10) for index, name in enumerate(classes)}


def precision_recall_figure(evaluation: DetectionEvaluation) -> Figure:
    """Per class, precision against recall at IoU 0.5 as pycocotools sampled it for AP50."""
    figure, axes = plt.subplots(figsize=(7, 5))
    colours = _colours(evaluation.classes)
    ap50 = evaluation.metrics["AP50"]
    for name in evaluation.classes:
        curve = evaluation.precision_curves[name]
        if np.isfinite(curve).any():
            label = f"{name} (AP50 {ap50[name]:.3f})"
            axes.plot(RECALL_POINTS, curve, color=colours[name], lw=2, label=label)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.03))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower left", fontsize=9)
    else:
        axes.text(0.5, 0.5, "no class has a true box", ha="center", transform=axes.transAxes)
    return figure


def image_level_figure(evaluation: DetectionEvaluation) -> Figure:
    """Image-level precision and recall per class as the score threshold moves; a dot marks each
    class's operating threshold and the value the metrics give there."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = _colours(evaluation.classes)
    metrics = evaluation.metrics
    for c, name in enumerate(evaluation.classes):
        precision, recall = precision_recall_sweep(
            evaluation.image_scores[:, c], evaluation.image_truth[:, c], SWEEP_THRESHOLDS
        )
        threshold = metrics["operating_thresholds"][name]
        for axes, curve, key in ((left, precision, "image_precision"), (right, recall, "image_recall")):
            axes.plot(SWEEP_THRESHOLDS, curve, color=colours[name], lw=2, label=name)
            axes.axvline(threshold, color=colours[name], ls="--", lw=1)
            if metrics[key][name] is not None:
                axes.plot([threshold], [metrics[key][name]], "o", color=colours[name], ms=6)
    for axes, title in ((left, "image-level precision"), (right, "image-level recall")):
        axes.set(xlabel="score threshold", title=title, xlim=(0, 1), ylim=(0, 1.03))
        axes.grid(alpha=0.3)
    right.legend(loc="lower left", fontsize=9)
    return figure


def confusion_figure(rows: Sequence[str], columns: Sequence[str], counts: np.ndarray) -> Figure:
    """Counts of :func:`~quickstudy.evaluate.matching.confusion_counts`, shaded by share of their row."""
    totals = np.maximum(counts.sum(1, keepdims=True), 1)
    side = 0.75 + 0.62 * len(columns)
    figure, axes = plt.subplots(figsize=(side + 1.5, 0.62 * len(rows) + 1.2))
    axes.imshow(counts / totals, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for r in range(len(rows)):
        for c in range(len(columns)):
            if counts[r, c]:
                dark = counts[r, c] / totals[r, 0] > 0.55
                colour = "white" if dark else "black"
                axes.text(c, r, str(counts[r, c]), ha="center", va="center", fontsize=10, color=colour)
    axes.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set(xlabel="predicted", ylabel="true")
    return figure


def examples_figure(images: Sequence[ImageResult]) -> Figure:
    """The images side by side with true boxes, misses, and detections coloured by what they found."""
    figure, axes_row = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.5), squeeze=False)
    for axes, image in zip(axes_row[0], images, strict=True):
        axes.imshow(image.pixels(), cmap="gray", vmin=0, vmax=255)
        axes.set_axis_off()
        hidden = max(0, int((image.matched_truth < 0).sum()) - FALSE_ALARMS_DRAWN)
        axes.set_title(image.name + (f"  (+{hidden} more false alarms)" if hidden else ""), fontsize=8)
        for box in image.true_boxes:
            axes.add_patch(_rect(box, "white", lw=0.8, alpha=0.8))
        for truth in image.missed():
            axes.add_patch(_rect(image.true_boxes[truth], MISSED, lw=2, ls="--"))
            _tag(axes, image.true_boxes[truth], f"missed {image.true_labels[truth] or ''}", MISSED)
        drawn_false_alarms = 0
        for detection in np.argsort(-image.scores, kind="stable"):
            truth, label = image.matched_truth[detection], image.labels[detection]
            if truth < 0:
                drawn_false_alarms += 1
                if drawn_false_alarms > FALSE_ALARMS_DRAWN:
                    continue
                colour = FALSE_ALARM
            elif image.true_labels[truth] in (None, label):
                colour = RIGHT
            else:
                colour = MISNAMED
            axes.add_patch(_rect(image.boxes[detection], colour, lw=1.8))
            _tag(axes, image.boxes[detection], f"{label} {image.scores[detection]:.2f}", colour)
    figure.tight_layout()
    return figure


def _rect(box: np.ndarray, colour: str, lw: float, ls: str = "-", alpha: float = 1.0) -> Rectangle:
    x1, y1, x2, y2 = box.tolist()
    return Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw, ls=ls, alpha=alpha)


def _tag(axes: Any, box: np.ndarray, text: str, colour: str) -> None:
    style = {"facecolor": colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85}
    axes.text(box[0], box[1] - 1.5, text, fontsize=7, color="black", va="bottom", bbox=style)
