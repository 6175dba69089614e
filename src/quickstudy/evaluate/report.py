"""One self-contained HTML report of a detector's results on a labelled image set.

The report takes plain data — per image, the ground truth and the predictions as lists of boxes
with class *names* — so it does not depend on how the detector works. It holds:

- a summary of the numbers it was given (``metrics``: scalars and one level of nested groups);
- the AP table and per-class precision-recall curves (computed with pycocotools, IoU 0.5);
- image-level precision and recall per class ("the image holds a box of class c") at the
  operating threshold, with a sweep over thresholds;
- a confusion matrix whose columns include ``unknown`` and background (a missed box) and whose
  rows include background (a false alarm);
- example images with their true positives, misses and false alarms drawn on them;
- the taxonomy history and the exact command and package versions that produced it.

Images and plots are embedded as base64 PNG, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import io
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from quickstudy.data.images import read_image
from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import Store

UNKNOWN = "unknown"
BACKGROUND = "background"
MATCH_IOU = 0.5
# An example image shows its highest-scoring false alarms only: dozens of boxes hide the image.
_FALSE_ALARMS_DRAWN = 5
SECTIONS = (
    ("summary", "Summary"),
    ("ap-table", "Average precision per class"),
    ("pr-curves", "Precision–recall curves"),
    ("image-level", "Image-level precision and recall"),
    ("confusion", "Confusion matrix"),
    ("examples", "Example detections"),
    ("taxonomy", "Taxonomy history"),
    ("provenance", "Command and versions"),
)
_VERSIONED_PACKAGES = ("quickstudy", "torch", "torchvision", "numpy", "matplotlib", "pycocotools", "pillow")


@dataclass
class ReportData:
    """Everything a report shows, as plain data.

    ``ground_truth[i]`` is ``{"image": path or uint8 [H, W] array, "boxes": [N, 4] xyxy,
    "labels": N class names (None for a box without a class)}``; an optional ``"name"`` titles the
    image. ``predictions[i]`` is ``{"boxes": [M, 4], "labels": M names (a class or "unknown"),
    "scores": M floats}`` for the same image.

    Example:
        >>> import numpy as np
        >>> truth = [{"image": np.zeros((32, 32), np.uint8), "boxes": [[4, 4, 12, 12]], "labels": ["pit"]}]
        >>> found = [{"boxes": [[4, 5, 12, 12]], "labels": ["pit"], "scores": [0.9]}]
        >>> html_text = render_report(ReportData("toy", ["pit"], truth, found))
        >>> 'id="confusion"' in html_text
        True
    """

    title: str
    class_names: Sequence[str]
    ground_truth: Sequence[Mapping[str, Any]]
    predictions: Sequence[Mapping[str, Any]]
    operating_threshold: float | Mapping[str, float] = 0.5
    taxonomy_history: Sequence[Mapping[str, Any]] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    command: str = field(default_factory=lambda: " ".join(sys.argv))
    examples_per_kind: int = 4

    def threshold(self, label: str) -> float:
        """The operating threshold of ``label``; with per-class thresholds, a name without its own
        (``unknown``) gets the least demanding one."""
        if isinstance(self.operating_threshold, Mapping):
            return float(
                self.operating_threshold.get(label, min(self.operating_threshold.values(), default=0.5))
            )
        return float(self.operating_threshold)

    def threshold_text(self) -> str:
        if isinstance(self.operating_threshold, Mapping):
            return (
                "per class (" + ", ".join(f"{k} {v:.2f}" for k, v in self.operating_threshold.items()) + ")"
            )
        return f"{self.operating_threshold:.2f}"


def truth_row(sample: Any, labels: Sequence[str | None] | None = None) -> dict[str, Any]:
    """The ground-truth row of a label-store sample (``path``, ``boxes`` with ``xyxy`` and ``allowed``):
    a box's label is its class when its allowed set holds exactly one, else None; ``labels``
    replaces them (a benchmark that knows the truth)."""
    names = (
        labels
        if labels is not None
        else [next(iter(b.allowed)) if len(b.allowed) == 1 else None for b in sample.boxes]
    )
    return {
        "image": sample.path,
        "name": Path(sample.path).name,
        "boxes": [box.xyxy for box in sample.boxes],
        "labels": list(names),
    }


def prediction_row(detections: Sequence[Any]) -> dict[str, Any]:
    """The prediction row of one image's detections (each with ``box``, ``class_name``, ``score``)."""
    return {
        "boxes": [d.box for d in detections],
        "labels": [d.class_name for d in detections],
        "scores": [d.score for d in detections],
    }


def taxonomy_history_rows(store: Store) -> list[dict[str, Any]]:
    """The taxonomy edits of a label store as report rows (operation, what changed, author, time)."""
    rows = []
    for edit in store.taxonomy.history():
        payload = edit["payload"]
        if edit["kind"] == "merge":
            detail = f"{' + '.join(payload['sources'])} → {payload['target']}"
        elif edit["kind"] == "split":
            detail = f"{payload['source']} → {', '.join(payload['targets'])}"
        elif edit["kind"] == "rename":
            detail = f"{payload['old']} → {payload['new']}"
        else:
            detail = str(payload.get("name", payload))
        rows.append(
            {
                "edit": edit["id"],
                "operation": edit["kind"],
                "detail": detail,
                "author": edit["author"],
                "time": edit["time"],
                "undone": "yes" if edit["undone"] else "",
            }
        )
    return rows


def write_report(path: str | os.PathLike[str], data: ReportData) -> Path:
    """Render ``data`` and write it to ``path`` (parent folders are created). Returns the path."""
    path = Path(path)
    text = render_report(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise QuickstudyError(f"{path}: cannot write report ({error.strerror or error})") from None
    return path


def render_report(data: ReportData) -> str:
    """The report as one HTML document."""
    images = [_ImageResult.from_plain(truth, found) for truth, found in _paired(data)]
    classes = list(data.class_names)
    for image in images:
        image.match(data.threshold)
    coco = _coco_curves(images, classes)
    sweep = _image_level_sweep(images, classes)
    sections = {
        "summary": _summary_html(data.metrics, len(images), data.threshold_text()),
        "ap-table": _ap_table_html(coco, sweep, classes, images, data),
        "pr-curves": _figure_html(_pr_figure(coco, classes), "Precision against recall per class at IoU 0.5"),
        "image-level": _figure_html(
            _sweep_figure(sweep, classes, data.threshold),
            "Image-level precision and recall per class as the score threshold moves",
        ),
        "confusion": _figure_html(
            _confusion_figure(images, classes),
            f"Predictions at or above the operating threshold ({data.threshold_text()}) matched to true boxes at IoU ≥ "
            f"{MATCH_IOU}, whatever their class. A true box no prediction matches is counted under "
            f"'{BACKGROUND}' (missed); a prediction that matches no true box is in the '{BACKGROUND}' row "
            "(false alarm).",
        ),
        "examples": _examples_html(images, data.examples_per_kind),
        "taxonomy": _taxonomy_html(data.taxonomy_history),
        "provenance": _provenance_html(data.command),
    }
    body = "\n".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{sections[key]}\n</section>'
        for key, title in SECTIONS
    )
    toc = " · ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in SECTIONS)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>{html.escape(data.title)}</h1><p class='meta'>quickstudy report · {generated} · "
        f"{len(images)} images · {len(classes)} classes</p><nav>{toc}</nav></header>\n"
        f"{body}\n</body></html>\n"
    )


def _paired(data: ReportData) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    if len(data.ground_truth) != len(data.predictions):
        raise QuickstudyError(
            f"report '{data.title}': {len(data.ground_truth)} ground-truth images but "
            f"{len(data.predictions)} prediction lists"
        )
    return list(zip(data.ground_truth, data.predictions, strict=True))


# --- matching ----------------------------------------------------------------------------------


@dataclass
class _ImageResult:
    """One image's truth and predictions, and (after ``match``) which prediction found which box."""

    name: str
    image: Any
    true_boxes: np.ndarray
    true_labels: list[str | None]
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    # filled by match(): index of the matched true box for each kept prediction, -1 = false alarm
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    matched_truth: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @classmethod
    def from_plain(cls, truth: Mapping[str, Any], found: Mapping[str, Any]) -> _ImageResult:
        image = truth.get("image")
        name = str(truth.get("name") or (Path(image).name if isinstance(image, str | os.PathLike) else ""))
        true_boxes = np.asarray(truth.get("boxes", []), dtype=np.float64).reshape(-1, 4)
        boxes = np.asarray(found.get("boxes", []), dtype=np.float64).reshape(-1, 4)
        true_labels = list(truth.get("labels", []))
        labels = [str(label) for label in found.get("labels", [])]
        scores = np.asarray(found.get("scores", []), dtype=np.float64).reshape(-1)
        if len(true_labels) != len(true_boxes) or not len(labels) == len(scores) == len(boxes):
            raise QuickstudyError(f"report: image '{name}' has boxes, labels and scores of different lengths")
        return cls(name, image, true_boxes, true_labels, boxes, labels, scores)

    def match(self, threshold: Callable[[str], float]) -> None:
        """Greedy class-agnostic matching of the predictions at or above their class's ``threshold``,
        best score first."""
        order = np.argsort(-self.scores, kind="stable")
        self.kept = np.array([i for i in order if self.scores[i] >= threshold(self.labels[i])], dtype=int)
        self.matched_truth = np.full(len(self.kept), -1, dtype=int)
        taken = np.zeros(len(self.true_boxes), dtype=bool)
        overlaps = _iou(self.boxes[self.kept], self.true_boxes)
        for row in range(len(self.kept)):
            candidates = np.where(taken, -1.0, overlaps[row])
            if candidates.size and candidates.max() >= MATCH_IOU:
                best = int(candidates.argmax())
                taken[best] = True
                self.matched_truth[row] = best

    def missed(self) -> list[int]:
        return sorted(set(range(len(self.true_boxes))) - set(self.matched_truth.tolist()))

    def mistakes(self) -> bool:
        """Whether a kept prediction is a false alarm or names its true box wrongly (or ``unknown``)."""
        return any(
            truth < 0 or self.true_labels[truth] not in (None, self.labels[prediction])
            for prediction, truth in zip(self.kept, self.matched_truth, strict=True)
        )

    def pixels(self) -> np.ndarray:
        if isinstance(self.image, np.ndarray):
            return self.image
        return read_image(self.image)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


# --- COCO AP and PR curves ---------------------------------------------------------------------


@dataclass
class _CocoCurves:
    recall: np.ndarray  # [101]
    precision: dict[str, np.ndarray]  # class -> [101], IoU 0.5, -1 where undefined
    ap50: dict[str, float]  # nan where the class has no true box
    ap: dict[str, float]  # AP@[.5:.95]
    true_boxes: dict[str, int]


def _coco_curves(images: Sequence[_ImageResult], classes: Sequence[str]) -> _CocoCurves:
    """AP and PR curves from pycocotools' COCOeval (the field's reference), all areas, 100 detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category = {name: index + 1 for index, name in enumerate(classes)}
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        for box, label in zip(image.true_boxes, image.true_labels, strict=True):
            if label in category:
                x1, y1, x2, y2 = box.tolist()
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        for box, label, score in zip(image.boxes, image.labels, image.scores, strict=True):
            if label in category:
                x1, y1, x2, y2 = box.tolist()
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": category[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
                )
    recall = np.linspace(0, 1, 101)
    counts = {name: sum(a["category_id"] == category[name] for a in annotations) for name in classes}
    nan = float("nan")
    if not annotations or not detections:
        return _CocoCurves(
            recall,
            {name: np.full(101, -1.0) for name in classes},
            {name: 0.0 if counts[name] else nan for name in classes},
            {name: 0.0 if counts[name] else nan for name in classes},
            counts,
        )
    truth = COCO()
    truth.dataset = {
        "images": [{"id": i} for i in range(1, len(images) + 1)],
        "annotations": annotations,
        "categories": [{"id": index, "name": name} for name, index in category.items()],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    curves, ap50, ap = {}, {}, {}
    for name, index in category.items():
        curve = precision[0, :, index - 1, 0, -1]
        curves[name] = curve
        all_ious = precision[:, :, index - 1, 0, -1]
        ap50[name] = float(curve[curve > -1].mean()) if (curve > -1).any() else nan
        ap[name] = float(all_ious[all_ious > -1].mean()) if (all_ious > -1).any() else nan
    return _CocoCurves(recall, curves, ap50, ap, counts)


# --- image-level precision and recall ----------------------------------------------------------

_SWEEP = np.linspace(0.0, 1.0, 101)


@dataclass
class _Sweep:
    thresholds: np.ndarray
    precision: dict[str, np.ndarray]  # nan where nothing is predicted
    recall: dict[str, np.ndarray]  # nan where the class is in no image


def _image_level_sweep(images: Sequence[_ImageResult], classes: Sequence[str]) -> _Sweep:
    """Per class c and threshold t: "the image holds a box of c" against "a prediction of c scores ≥ t"."""
    precision, recall = {}, {}
    for name in classes:
        holds = np.array([name in image.true_labels for image in images], dtype=bool)
        best = np.array(
            [
                max((s for s, lab in zip(i.scores, i.labels, strict=True) if lab == name), default=-1.0)
                for i in images
            ]
        )
        said = best[None, :] >= np.maximum(_SWEEP[:, None], 1e-12)
        hits = (said & holds[None, :]).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision[name] = np.where(said.sum(1) > 0, hits / said.sum(1), np.nan)
            recall[name] = hits / holds.sum() if holds.any() else np.full(len(_SWEEP), np.nan)
    return _Sweep(_SWEEP, precision, recall)


def _at(sweep_values: np.ndarray, threshold: float) -> float:
    return float(sweep_values[int(np.argmin(np.abs(_SWEEP - threshold)))])


# --- sections ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        number = float(value)
        if not np.isfinite(number):
            return "—"
        # scores and shares to 3 decimals; seconds and counts need fewer
        return f"{number:.3f}" if abs(number) < 10 else f"{number:,.1f}"
    return html.escape(str(value))


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{_fmt(cell)}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(metrics: Mapping[str, Any], n_images: int, threshold: str) -> str:
    scalars = [(k, v) for k, v in metrics.items() if not isinstance(v, Mapping)]
    groups = [(k, v) for k, v in metrics.items() if isinstance(v, Mapping)]
    parts = [f"<p>{n_images} images evaluated; operating threshold {html.escape(threshold)}.</p>"]
    if scalars:
        cards = "".join(
            f"<div class=card><div class=value>{_fmt(v)}</div><div class=label>{html.escape(k)}</div></div>"
            for k, v in scalars
        )
        parts.append(f"<div class=cards>{cards}</div>")
    for name, values in groups:
        rows = [[key, value] for key, value in values.items()]
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(['', 'value'], rows)}")
    return "\n".join(parts)


def _ap_table_html(
    coco: _CocoCurves, sweep: _Sweep, classes: Sequence[str], images: Sequence[_ImageResult], data: ReportData
) -> str:
    rows = []
    for name in classes:
        holding = sum(name in image.true_labels for image in images)
        rows.append(
            [
                name,
                coco.true_boxes[name],
                holding,
                coco.ap50[name],
                coco.ap[name],
                data.threshold(name),
                _at(sweep.precision[name], data.threshold(name)),
                _at(sweep.recall[name], data.threshold(name)),
            ]
        )
    finite = [coco.ap50[name] for name in classes if np.isfinite(coco.ap50[name])]
    mean_ap = [coco.ap[name] for name in classes if np.isfinite(coco.ap[name])]
    rows.append(
        [
            "mean",
            "",
            "",
            np.mean(finite) if finite else np.nan,
            np.mean(mean_ap) if mean_ap else np.nan,
            "",
            "",
            "",
        ]
    )
    columns = [
        "class",
        "true boxes",
        "images",
        "AP50",
        "AP@[.5:.95]",
        "threshold",
        "image precision",
        "image recall",
    ]
    return (
        _table(columns, rows)
        + "<p class=note>AP by pycocotools (all areas, 100 detections per image). Image precision and "
        "recall at the class's operating threshold: an image counts as holding class c when it holds a "
        "true box of c, and as predicted when some prediction of c scores at least the threshold.</p>"
    )


def _figure_html(figure: Figure, caption: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    escaped = html.escape(caption)
    return (
        f"<figure><img alt='{escaped}' src='data:image/png;base64,{encoded}'>"
        f"<figcaption>{escaped}</figcaption></figure>"
    )


def _colours(classes: Sequence[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(index % 10) for index, name in enumerate(classes)}


def _pr_figure(coco: _CocoCurves, classes: Sequence[str]) -> Figure:
    figure, axes = plt.subplots(figsize=(7, 5))
    colours = _colours(classes)
    for name in classes:
        curve = coco.precision[name]
        if (curve > -1).any():
            axes.plot(
                coco.recall,
                np.where(curve > -1, curve, np.nan),
                color=colours[name],
                lw=2,
                label=f"{name} (AP50 {coco.ap50[name]:.2f})",
            )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.03))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower left", fontsize=9)
    else:
        axes.text(
            0.5, 0.5, "no class has both true boxes and predictions", ha="center", transform=axes.transAxes
        )
    return figure


def _sweep_figure(sweep: _Sweep, classes: Sequence[str], threshold: Callable[[str], float]) -> Figure:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = _colours(classes)
    for name in classes:
        left.plot(sweep.thresholds, sweep.precision[name], color=colours[name], lw=2, label=name)
        right.plot(sweep.thresholds, sweep.recall[name], color=colours[name], lw=2, label=name)
        for axes in (left, right):  # each class's operating threshold
            axes.axvline(threshold(name), color=colours[name], ls="--", lw=1)
    for axes, title in ((left, "image-level precision"), (right, "image-level recall")):
        axes.set(xlabel="score threshold", title=title, xlim=(0, 1), ylim=(0, 1.03))
        axes.grid(alpha=0.3)
    right.legend(loc="lower left", fontsize=9)
    return figure


def _confusion_counts(
    images: Sequence[_ImageResult], classes: Sequence[str]
) -> tuple[list[str], list[str], np.ndarray]:
    """Rows (true class or background), columns (predicted class, unknown, background) and counts."""
    rows = list(classes)
    columns = [*classes, UNKNOWN]
    for image in images:  # names the caller did not list still get a row or a column
        rows += [str(label) for label in image.true_labels if label is not None and label not in rows]
        columns += [label for label in image.labels if label not in columns]
    rows.append(BACKGROUND)
    columns.append(BACKGROUND)
    counts = np.zeros((len(rows), len(columns)), dtype=int)
    for image in images:
        for prediction, truth in zip(image.kept, image.matched_truth, strict=True):
            true_label = image.true_labels[truth] if truth >= 0 else BACKGROUND
            if true_label is None:  # a box with no class: a detection, not a naming, to judge
                continue
            counts[rows.index(true_label), columns.index(image.labels[prediction])] += 1
        for truth in image.missed():
            if image.true_labels[truth] is not None:
                counts[rows.index(str(image.true_labels[truth])), columns.index(BACKGROUND)] += 1
    return rows, columns, counts


def _confusion_figure(images: Sequence[_ImageResult], classes: Sequence[str]) -> Figure:
    rows, columns, counts = _confusion_counts(images, classes)
    totals = np.maximum(counts.sum(1, keepdims=True), 1)
    side = 0.75 + 0.62 * len(columns)
    figure, axes = plt.subplots(figsize=(side + 1.5, 0.62 * len(rows) + 1.2))
    axes.imshow(counts / totals, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for r in range(len(rows)):
        for c in range(len(columns)):
            if counts[r, c]:
                dark = counts[r, c] / totals[r, 0] > 0.55
                axes.text(
                    c,
                    r,
                    str(counts[r, c]),
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="white" if dark else "black",
                )
    axes.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set(xlabel="predicted", ylabel="true")
    return figure


def _examples_html(images: Sequence[_ImageResult], per_kind: int) -> str:
    kinds = {
        "Correct detections": [i for i in images if len(i.kept) and not i.missed() and not i.mistakes()],
        "Misses": [i for i in images if i.missed()],
        "False alarms and wrong names": [i for i in images if i.mistakes()],
    }
    legend = (
        "<p class=legend><span style='color:#1a9850'>■</span> right box, right class · "
        "<span style='color:#f28e2b'>■</span> right box, wrong class or unknown · "
        "<span style='color:#d62728'>■</span> false alarm · "
        "<span style='color:#f5d40f'>■</span> true box missed (dashed) · "
        "thin white: true box</p>"
    )
    parts = [legend]
    for title, chosen in kinds.items():
        parts.append(f"<h3>{html.escape(title)} ({len(chosen)} images)</h3>")
        if chosen:
            parts.append(_figure_html(_examples_figure(chosen[:per_kind]), title))
        else:
            parts.append("<p class=note>none</p>")
    return "\n".join(parts)


def _examples_figure(images: Sequence[_ImageResult]) -> Figure:
    figure, axes_row = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.5), squeeze=False)
    for axes, image in zip(axes_row[0], images, strict=True):
        axes.imshow(image.pixels(), cmap="gray", vmin=0, vmax=255)
        axes.set_axis_off()
        false_alarms = int((image.matched_truth < 0).sum())
        hidden = max(0, false_alarms - _FALSE_ALARMS_DRAWN)
        axes.set_title(image.name + (f"  (+{hidden} more false alarms)" if hidden else ""), fontsize=8)
        drawn_false_alarms = 0
        for box in image.true_boxes:
            axes.add_patch(_rect(box, "white", lw=0.8, alpha=0.8))
        for truth in image.missed():
            axes.add_patch(_rect(image.true_boxes[truth], "#f5d40f", lw=2, ls="--"))
            _tag(axes, image.true_boxes[truth], f"missed {image.true_labels[truth] or ''}", "#f5d40f")
        for prediction, truth in zip(image.kept, image.matched_truth, strict=True):
            label = image.labels[prediction]
            if truth < 0:
                drawn_false_alarms += 1
                if drawn_false_alarms > _FALSE_ALARMS_DRAWN:
                    continue
                colour = "#d62728"
            elif label == image.true_labels[truth] or image.true_labels[truth] is None:
                colour = "#1a9850"
            else:
                colour = "#f28e2b"
            axes.add_patch(_rect(image.boxes[prediction], colour, lw=1.8))
            _tag(axes, image.boxes[prediction], f"{label} {image.scores[prediction]:.2f}", colour)
    figure.tight_layout()
    return figure


def _rect(box: np.ndarray, colour: str, lw: float, ls: str = "-", alpha: float = 1.0) -> Rectangle:
    x1, y1, x2, y2 = box.tolist()
    return Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw, ls=ls, alpha=alpha)


def _tag(axes: Any, box: np.ndarray, text: str, colour: str) -> None:
    axes.text(
        box[0],
        box[1] - 1.5,
        text,
        fontsize=7,
        color="black",
        va="bottom",
        bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
    )


def _taxonomy_html(history: Sequence[Mapping[str, Any]]) -> str:
    if not history:
        return "<p class=note>No taxonomy changes recorded.</p>"
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    return _table(columns, [[row.get(c, "") for c in columns] for row in history], numeric_from=len(columns))


def _provenance_html(command: str) -> str:
    versions = [["python", platform.python_version()], ["platform", platform.platform()]]
    for package in _VERSIONED_PACKAGES:
        try:
            versions.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            versions.append([package, "not installed"])
    return f"<pre class=command>{html.escape(command)}</pre>" + _table(
        ["component", "version"], versions, numeric_from=2
    )


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:0 28px 60px;color:#1f2328;background:#fff;line-height:1.45}
header{border-bottom:2px solid #e5e7eb;padding:22px 0 12px;margin-bottom:8px}
h1{margin:0 0 4px;font-size:28px}h2{font-size:21px;margin:34px 0 10px;padding-bottom:4px;
border-bottom:1px solid #e5e7eb}h3{font-size:16px;margin:18px 0 6px}
.meta{color:#57606a;margin:0 0 8px}nav{font-size:13px}nav a{color:#0969da;text-decoration:none}
table{border-collapse:collapse;font-size:14px;margin:6px 0}
th,td{padding:5px 12px;border-bottom:1px solid #e5e7eb;text-align:left}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:last-child td{border-bottom:2px solid #d0d7de}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}.card{border:1px solid #d0d7de;border-radius:8px;
padding:10px 16px;min-width:120px}.card .value{font-size:24px;font-weight:600}
.card .label{color:#57606a;font-size:13px}
figure{margin:8px 0}figure img{max-width:100%}figcaption,.note{color:#57606a;font-size:13px}
.legend{font-size:14px}pre.command{background:#f6f8fa;padding:10px;border-radius:6px;white-space:pre-wrap}
"""
