"""One self-contained HTML report of a detector's evaluation on a labelled image set.

The report renders a :class:`~quickstudy.evaluate.detection.DetectionEvaluation` — every number in
its ``metrics``, which are exactly what ``quickstudy eval --json`` prints, and the JSON itself
embedded (``<script id="metrics">``) — with figures drawn from the same evaluation
(:mod:`quickstudy.evaluate.figures`). The confusion matrix and the example images come from the
detections as ``quickstudy predict`` names them (at the operating thresholds, ``unknown``
included), matched to the true boxes by :mod:`quickstudy.evaluate.matching`.

The report is a list of :data:`SECTIONS`; a section is a key, a title and a function from the
:class:`ReportData` to HTML, so adding one is a function and a line (and a field on ``ReportData``
when it needs data the report does not have yet). Images and plots are embedded as base64 PNG, so
the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure

from quickstudy.errors import QuickstudyError
from quickstudy.evaluate import figures
from quickstudy.evaluate.detection import DetectionEvaluation
from quickstudy.evaluate.matching import BACKGROUND, MATCH_IOU, ImageResult, confusion_counts
from quickstudy.evaluate.operating import DEFECT_PRESENT
from quickstudy.labels.store import Store

_VERSIONED_PACKAGES = ("quickstudy", "torch", "torchvision", "numpy", "matplotlib", "pycocotools", "pillow")
# The per-class metrics, in the order and under the headings of the per-class table; a per-class
# metric not listed here gets a column under its own key.
PER_CLASS_COLUMNS = {
    "true_boxes": "true boxes",
    "true_images": "images",
    "AP50": "AP50",
    "AP": "AP@[.5:.95]",
    "operating_thresholds": "threshold",
    "image_precision": "image precision",
    "image_recall": "image recall",
}
TARGET_PRECISION = "at_target_precision"


@dataclass
class ReportData:
    """Everything a report shows.

    ``evaluation``: the scored detections (:func:`~quickstudy.evaluate.detection.evaluate_predictions`).
    ``ground_truth[i]``: ``{"image": path or uint8 [H, W] array, "boxes": [N, 4] xyxy, "labels": N
    class names (None for a box without class)}``, an optional ``"name"`` titling the image (see
    :func:`truth_row`). ``predictions[i]``: the same image's detections as ``predict`` names them,
    ``{"boxes": [M, 4], "labels": M names (a class or "unknown"), "scores": M floats}`` (see
    :func:`prediction_row`). ``summary``: more numbers to show first, as scalars or one level of
    groups (the demo's story).

    Example:
        >>> import numpy as np
        >>> from quickstudy.evaluate.detection import evaluate_predictions
        >>> truth = [{"image": np.zeros((32, 32), np.uint8), "boxes": [[4, 4, 12, 12]], "labels": ["pit"]}]
        >>> found = [{"boxes": [[4, 5, 12, 12]], "labels": ["pit"], "scores": [0.9]}]
        >>> scored = evaluate_predictions(
        ...     [(np.array([[4, 4, 12, 12]]), np.array([0]))],
        ...     [{"boxes": np.array([[4, 5, 12, 12]]), "labels": np.array([0]), "scores": np.array([0.9])}],
        ...     ["pit"],
        ...     {"pit": 0.5},
        ... )
        >>> 'id="confusion"' in render_report(ReportData("toy", scored, truth, found))
        True
    """

    title: str
    evaluation: DetectionEvaluation
    ground_truth: Sequence[Mapping[str, Any]]
    predictions: Sequence[Mapping[str, Any]]
    taxonomy_history: Sequence[Mapping[str, Any]] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    command: str = field(default_factory=lambda: " ".join(sys.argv))
    examples_per_kind: int = 4

    @property
    def metrics(self) -> dict[str, Any]:
        return self.evaluation.metrics

    @cached_property
    def images(self) -> list[ImageResult]:
        """Each image's truth and detections, matched."""
        if len(self.ground_truth) != len(self.predictions):
            raise QuickstudyError(
                f"report '{self.title}': {len(self.ground_truth)} ground-truth images but "
                f"{len(self.predictions)} prediction lists"
            )
        return [
            ImageResult.from_rows(truth, found)
            for truth, found in zip(self.ground_truth, self.predictions, strict=True)
        ]

    def thresholds_text(self) -> str:
        """The operating thresholds, as ``"pit 0.437, dent 0.640"``."""
        return ", ".join(
            f"{name} {_fmt(value)}" for name, value in self.metrics["operating_thresholds"].items()
        )


class Section(NamedTuple):
    """A part of the report: ``render`` gives its HTML body."""

    key: str
    title: str
    render: Callable[[ReportData], str]


def truth_row(sample: Any) -> dict[str, Any]:
    """The ground-truth row of a label-store sample (``path``, ``boxes`` with ``xyxy`` and ``allowed``):
    a box's label is its class when its allowed set holds exactly one, else None."""
    return {
        "image": sample.path,
        "name": Path(sample.path).name,
        "boxes": [box.xyxy for box in sample.boxes],
        "labels": [next(iter(b.allowed)) if len(b.allowed) == 1 else None for b in sample.boxes],
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


def render_report(data: ReportData, sections: Sequence[Section] | None = None) -> str:
    """The report as one HTML document: ``sections`` (default :data:`SECTIONS`) in order."""
    chosen = SECTIONS if sections is None else sections
    body = "\n".join(
        f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>\n'
        f"{section.render(data)}\n</section>"
        for section in chosen
    )
    toc = " · ".join(f'<a href="#{section.key}">{html.escape(section.title)}</a>' for section in chosen)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # "<" escaped so that no string in the metrics can close the script element
    embedded = json.dumps(data.metrics, default=str).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style>"
        f'<script type="application/json" id="metrics">{embedded}</script></head><body>\n'
        f"<header><h1>{html.escape(data.title)}</h1><p class='meta'>quickstudy report · {generated} · "
        f"{len(data.images)} images · {len(data.evaluation.classes)} classes</p><nav>{toc}</nav></header>\n"
        f"{body}\n</body></html>\n"
    )


# --- sections ----------------------------------------------------------------------------------


def _summary_html(data: ReportData) -> str:
    parts = [
        f"<p>{len(data.images)} images evaluated at the operating thresholds "
        f"({html.escape(data.thresholds_text())}). Every number below is in the metrics of "
        "<code>quickstudy eval --json</code>, embedded in this file.</p>",
        _cards({k: v for k, v in data.metrics.items() if not isinstance(v, Mapping)}),
    ]
    parts.append(_cards({k: v for k, v in data.summary.items() if not isinstance(v, Mapping)}))
    for name, values in data.summary.items():
        if isinstance(values, Mapping):
            rows = [[key, value] for key, value in values.items()]
            parts.append(f"<h3>{html.escape(name)}</h3>{_table(['', 'value'], rows)}")
    return "\n".join(part for part in parts if part)


def _per_class_html(data: ReportData) -> str:
    classes = data.evaluation.classes
    per_class = {k: v for k, v in data.metrics.items() if isinstance(v, Mapping) and set(v) == set(classes)}
    keys = [k for k in PER_CLASS_COLUMNS if k in per_class] + [
        k for k in per_class if k not in PER_CLASS_COLUMNS
    ]
    rows: list[list[Any]] = [[name, *(per_class[key][name] for key in keys)] for name in classes]
    means = {"AP50": data.metrics["mAP50"], "AP": data.metrics["mAP"]}
    rows.append(["mean", *(means.get(key, "") for key in keys)])
    parts = [
        _table(["class", *(PER_CLASS_COLUMNS.get(key, key) for key in keys)], rows),
        "<p class=note>AP by pycocotools (all areas, 100 detections per image); the mean row is mAP50 and "
        "mAP. Image precision and recall at the class's operating threshold: an image counts as holding "
        "class c when it holds a true box of c, and as predicted when some detection of c scores at "
        "least the threshold.</p>",
    ]
    if TARGET_PRECISION in data.metrics:
        parts.append(_target_precision_html(data.metrics[TARGET_PRECISION]))
    for name, values in data.metrics.items():  # any other group of numbers is shown as it is
        if isinstance(values, Mapping) and name not in per_class and name != TARGET_PRECISION:
            parts.append(f"<h3>{html.escape(name)}</h3>{_table(['', 'value'], list(values.items()))}")
    return "\n".join(parts)


def _target_precision_html(points: Mapping[str, Any]) -> str:
    columns = ["threshold", "precision", "recall", "flagged", "positives", "reached"]
    rows = [[name, *(point[c] for c in columns)] for name, point in points.items() if name != "target"]
    return (
        f"<h3>Image-score thresholds for precision ≥ {_fmt(points['target'])}</h3>"
        + _table(["class", *columns], rows)
        + f"<p class=note>Picked on these images (per class and for '{DEFECT_PRESENT}'): the threshold "
        "with the most recall among those that reach the target.</p>"
    )


def _pr_curves_html(data: ReportData) -> str:
    return _figure_html(
        figures.precision_recall_figure(data.evaluation), "Precision against recall per class at IoU 0.5"
    )


def _image_level_html(data: ReportData) -> str:
    return _figure_html(
        figures.image_level_figure(data.evaluation),
        "Image-level precision and recall per class as the score threshold moves; the dashed line and "
        "the dot mark the operating threshold and the value in the table.",
    )


def _confusion_html(data: ReportData) -> str:
    return _figure_html(
        figures.confusion_figure(*confusion_counts(data.images, data.evaluation.classes)),
        f"Detections as predict names them at the operating thresholds ({data.thresholds_text()}), "
        f"matched to true boxes at IoU ≥ {MATCH_IOU}, whatever their class. A true box no detection "
        f"matches is counted under '{BACKGROUND}' (missed); a detection that matches no true box is in "
        f"the '{BACKGROUND}' row (false alarm).",
    )


def _examples_html(data: ReportData) -> str:
    images = data.images
    kinds = {
        "Correct detections": [i for i in images if len(i.labels) and not i.missed() and not i.mistakes()],
        "Misses": [i for i in images if i.missed()],
        "False alarms and wrong names": [i for i in images if i.mistakes()],
    }
    legend = (
        f"<p class=legend><span style='color:{figures.RIGHT}'>■</span> right box, right class · "
        f"<span style='color:{figures.MISNAMED}'>■</span> right box, wrong class or unknown · "
        f"<span style='color:{figures.FALSE_ALARM}'>■</span> false alarm · "
        f"<span style='color:{figures.MISSED}'>■</span> true box missed (dashed) · "
        "thin white: true box</p>"
    )
    parts = [legend]
    for title, chosen in kinds.items():
        parts.append(f"<h3>{html.escape(title)} ({len(chosen)} images)</h3>")
        if chosen:
            parts.append(_figure_html(figures.examples_figure(chosen[: data.examples_per_kind]), title))
        else:
            parts.append("<p class=note>none</p>")
    return "\n".join(parts)


def _taxonomy_html(data: ReportData) -> str:
    history = data.taxonomy_history
    if not history:
        return "<p class=note>No taxonomy changes recorded.</p>"
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    return _table(columns, [[row.get(c, "") for c in columns] for row in history], numeric_from=len(columns))


def _provenance_html(data: ReportData) -> str:
    versions = [["python", platform.python_version()], ["platform", platform.platform()]]
    for package in _VERSIONED_PACKAGES:
        try:
            versions.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            versions.append([package, "not installed"])
    return f"<pre class=command>{html.escape(data.command)}</pre>" + _table(
        ["component", "version"], versions, numeric_from=2
    )


SECTIONS = (
    Section("summary", "Summary", _summary_html),
    Section("per-class", "Per class: AP, threshold, image precision and recall", _per_class_html),
    Section("pr-curves", "Precision–recall curves", _pr_curves_html),
    Section("image-level", "Image-level precision and recall", _image_level_html),
    Section("confusion", "Confusion matrix", _confusion_html),
    Section("examples", "Example detections", _examples_html),
    Section("taxonomy", "Taxonomy history", _taxonomy_html),
    Section("provenance", "Command and versions", _provenance_html),
)


# --- HTML pieces -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
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


def _cards(values: Mapping[str, Any]) -> str:
    cards = "".join(
        f"<div class=card><div class=value>{_fmt(v)}</div><div class=label>{html.escape(k)}</div></div>"
        for k, v in values.items()
    )
    return f"<div class=cards>{cards}</div>" if cards else ""


def _figure_html(figure: Figure, caption: str) -> str:
    encoded = base64.b64encode(figures.png(figure)).decode("ascii")
    escaped = html.escape(caption)
    return (
        f"<figure><img alt='{escaped}' src='data:image/png;base64,{encoded}'>"
        f"<figcaption>{escaped}</figcaption></figure>"
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
