"""The HTML report: the numbers `eval --json` prints, every section, embedded images, clear errors."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from quickstudy.cli._common import print_json
from quickstudy.errors import QuickstudyError
from quickstudy.evaluate.detection import DetectionEvaluation, evaluate_predictions
from quickstudy.evaluate.matching import (
    BACKGROUND,
    UNKNOWN,
    ImageResult,
    confusion_counts,
    names_called,
    naming_outcome,
)
from quickstudy.evaluate.report import (
    PER_CLASS_COLUMNS,
    SECTIONS,
    ReportData,
    Section,
    prediction_row,
    render_report,
    truth_row,
    write_report,
)

CLASSES = ["pit", "dent"]


def _image(boxes, labels):
    return {"image": np.full((40, 40), 128, np.uint8), "boxes": boxes, "labels": labels}


def _found(boxes, labels, scores):
    return {"boxes": boxes, "labels": labels, "scores": scores}


def _evaluation(
    truth: Sequence[Mapping[str, Any]],
    found: Sequence[Mapping[str, Any]],
    classes: Sequence[str] = CLASSES,
    operating: Mapping[str, float] | None = None,
) -> DetectionEvaluation:
    """The evaluation of the named rows: a detection of a class scores for it, ``unknown`` for none."""
    index = {name: i for i, name in enumerate(classes)}
    gts, preds = [], []
    for t, f in zip(truth, found, strict=True):
        named = [
            (b, index[label]) for b, label in zip(t["boxes"], t["labels"], strict=True) if label in index
        ]
        gts.append(
            (np.array([b for b, _ in named], float).reshape(-1, 4), np.array([c for _, c in named], int))
        )
        kept = [i for i, label in enumerate(f["labels"]) if label in index]
        preds.append(
            {
                "boxes": np.array([f["boxes"][i] for i in kept], float).reshape(-1, 4),
                "scores": np.array([f["scores"][i] for i in kept], float),
                "labels": np.array([index[f["labels"][i]] for i in kept], int),
            }
        )
    return evaluate_predictions(gts, preds, classes, operating or dict.fromkeys(classes, 0.5))


def _report(truth, found, **options) -> ReportData:
    return ReportData("toy", _evaluation(truth, found), truth, found, **options)


def _section(text: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', text, re.S)
    assert match is not None, key
    return match.group(1)


def _first_table(text: str) -> tuple[list[str], list[list[str]]]:
    table = re.search(r"<table>(.*?)</table>", text, re.S)
    assert table is not None
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table.group(1))]
    rows = [
        [html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table.group(1).split("</thead>")[1])
    ]
    return head, rows


def _shown(value: Any) -> str:
    """A metric as the report writes it."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"


def test_the_report_shows_exactly_the_numbers_eval_json_prints(capsys) -> None:
    """One evaluation, two renderings. The detections are chosen where a recomputation on cut
    detections or a 0.01 threshold grid would differ: a true pit found only at score 0.03, and an
    image whose best pit scores 0.438, just above pit's operating threshold 0.437."""
    truth = [
        _image([[2, 2, 12, 12]], ["pit"]),
        _image([[2, 2, 12, 12], [20, 20, 30, 30]], ["pit", "dent"]),
        _image([[5, 5, 15, 15]], ["pit"]),
        _image([[20, 20, 34, 30]], ["dent"]),
        _image([], []),
    ]
    found = [
        _found([[2, 2, 12, 12], [25, 25, 35, 35]], ["pit", "dent"], [0.9, 0.6]),
        _found([[2, 2, 12, 11], [20, 20, 30, 30]], ["pit", "dent"], [0.438, 0.7]),
        _found([[5, 5, 15, 15]], ["pit"], [0.03]),
        _found([[20, 20, 34, 30]], ["dent"], [0.2]),
        _found([[1, 1, 9, 9]], ["dent"], [0.65]),
    ]
    evaluation = _evaluation(truth, found, operating={"pit": 0.437, "dent": 0.64})
    print_json(evaluation.metrics)  # what `quickstudy eval --json` prints
    printed = json.loads(capsys.readouterr().out)
    text = render_report(ReportData("same numbers", evaluation, truth, found))

    embedded = re.search(r'<script type="application/json" id="metrics">(.*?)</script>', text, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == printed

    summary = _section(text, "summary")
    cards = dict(
        (html.unescape(label), value)
        for value, label in re.findall(r"<div class=value>(.*?)</div><div class=label>(.*?)</div>", summary)
    )
    for key in ("mAP", "mAP50", "AR100_agnostic", "AR100_agnostic_50", "AP50_agnostic"):
        assert cards[key] == _shown(printed[key]), key

    head, rows = _first_table(_section(text, "per-class"))
    assert head == ["class", *PER_CLASS_COLUMNS.values()]
    table = {row[0]: dict(zip(head[1:], row[1:], strict=True)) for row in rows}
    for name in CLASSES:
        for key, heading in PER_CLASS_COLUMNS.items():
            assert table[name][heading] == _shown(printed[key][name]), (name, key)
    assert (table["mean"]["AP50"], table["mean"]["AP@[.5:.95]"]) == (
        _shown(printed["mAP50"]),
        _shown(printed["mAP"]),
    )
    # the cases the detections were chosen for: what a 0.01 grid or a 0.05 floor would have changed
    assert printed["operating_thresholds"]["pit"] == 0.437 and table["pit"]["threshold"] == "0.437"
    assert printed["image_recall"]["pit"] == pytest.approx(2 / 3)  # 0.9 and 0.438 flagged, 0.03 not
    assert printed["image_precision"]["dent"] == pytest.approx(1 / 2)  # 0.7 right, 0.65 a false alarm


def test_perfect_predictions_give_ap_one_and_a_diagonal_confusion() -> None:
    truth = [_image([[2, 2, 12, 12]], ["pit"]), _image([[20, 20, 34, 30]], ["dent"])]
    found = [_found([[2, 2, 12, 12]], ["pit"], [0.9]), _found([[20, 20, 34, 30]], ["dent"], [0.8])]
    text = render_report(_report(truth, found))
    _, rows = _first_table(_section(text, "per-class"))
    assert rows[0] == ["pit", "1", "1", "1.000", "1.000", "0.500", "1.000", "1.000"]
    rows_, columns, counts = confusion_counts(_report(truth, found).images, CLASSES)
    assert counts[rows_.index("pit"), columns.index("pit")] == 1
    assert counts[rows_.index("dent"), columns.index("dent")] == 1
    assert counts.sum() == 2


def test_confusion_counts_misses_false_alarms_and_unknown() -> None:
    truth = [_image([[2, 2, 12, 12], [20, 20, 30, 30]], ["pit", "dent"])]
    found = [_found([[2, 2, 12, 13], [25, 2, 35, 8]], [UNKNOWN, "dent"], [0.9, 0.7])]
    rows, columns, counts = confusion_counts(_report(truth, found).images, CLASSES)
    assert counts[rows.index("pit"), columns.index(UNKNOWN)] == 1
    assert counts[rows.index(BACKGROUND), columns.index("dent")] == 1  # false alarm
    assert counts[rows.index("dent"), columns.index(BACKGROUND)] == 1  # missed
    assert counts.sum() == 3


def test_a_true_box_is_matched_once_by_the_best_scoring_detection() -> None:
    truth = _image([[2, 2, 12, 12]], ["pit"])
    found = _found([[2, 2, 12, 12], [2, 2, 12, 11]], ["pit", "dent"], [0.6, 0.9])
    image = ImageResult.from_rows(truth, found)
    assert image.matched_truth.tolist() == [-1, 0]
    rows, columns, counts = confusion_counts([image], CLASSES)
    assert counts[rows.index("pit"), columns.index("dent")] == 1
    assert counts[rows.index(BACKGROUND), columns.index("pit")] == 1


def test_each_true_box_is_called_what_its_matched_detection_says_and_sorted_into_its_outcome() -> None:
    true_boxes = np.array([[2, 2, 12, 12], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], dtype=float)
    boxes = np.array([[2, 2, 12, 12], [2, 2, 12, 11], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    called = names_called(boxes, np.array([0.6, 0.9, 0.8, 0.7]), ["pit", "dent", UNKNOWN, "pit"], true_boxes)
    assert called == ["dent", UNKNOWN, "pit", None]  # the best-scoring detection takes the first box
    outcomes = [naming_outcome("pit", name) for name in called]
    assert outcomes == ["named_other", "unknown", "named_right", "missed"]


def test_matching_needs_iou_of_one_half() -> None:
    truth = _image([[0, 0, 10, 10], [20, 0, 30, 10]], ["pit", "pit"])
    # IoU 50/100 = 0.5 with the first box (a match); 40/110 < 0.5 with the second (none)
    found = _found([[0, 0, 10, 5], [20, 0, 30, 4]], ["pit", "pit"], [0.9, 0.8])
    assert ImageResult.from_rows(truth, found).matched_truth.tolist() == [0, -1]


def test_report_holds_every_section_embeds_its_images_and_escapes_names(tmp_path) -> None:
    truth = [_image([[2, 2, 12, 12]], ["<pit>"]), _image([[20, 20, 30, 30]], [None])]
    found = [_found([[2, 2, 12, 12]], ["<pit>"], [0.9]), _found([[0, 0, 5, 5]], ["dent"], [0.7])]
    history = [{"version": 2, "operation": "split", "detail": "line -> pit, dent"}]
    data = ReportData(
        "toy",
        _evaluation(truth, found, ["<pit>", "dent"]),
        truth,
        found,
        history,
        {"seconds": 1.5, "train": {"epochs": 3}},
        "qs demo",
    )
    path = write_report(tmp_path / "out" / "report.html", data)
    text = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section.key}">' in text
    assert text.count("data:image/png;base64,") >= 5  # PR, sweep, confusion and two example grids
    assert not re.search(r"""(src|href)=['"]https?:""", text)  # nothing fetched from outside
    assert "&lt;pit&gt;" in text and "<pit>" not in text.split("</script>", 1)[1]
    assert "line -&gt; pit, dent" in text
    assert "<pre class=command>qs demo</pre>" in text
    assert "<h3>train</h3>" in text and "<div class=label>seconds</div>" in text  # the caller's summary
    assert "pycocotools" in text and "numpy" in text


def test_a_section_is_a_function_and_a_line() -> None:
    truth, found = [_image([], [])], [_found([], [], [])]
    extra = Section("unknowns", "Unknown detections", lambda data: f"<p>{len(data.images)} images</p>")
    text = render_report(_report(truth, found), [*SECTIONS, extra])
    assert '<section id="unknowns"><h2>Unknown detections</h2>\n<p>1 images</p>' in text
    assert '<a href="#unknowns">' in text


def test_target_precision_points_are_shown_when_eval_computed_them() -> None:
    truth, found = [_image([[2, 2, 12, 12]], ["pit"])], [_found([[2, 2, 12, 12]], ["pit"], [0.9])]
    data = _report(truth, found)
    point = {"threshold": 0.9, "precision": 1.0, "recall": 1.0, "reached": True, "positives": 1, "flagged": 1}
    data.metrics["at_target_precision"] = {"target": 0.99, "pit": point}
    text = _section(render_report(data), "per-class")
    assert "Image-score thresholds for precision ≥ 0.990" in text
    assert "<td>pit</td><td class=num>0.900</td><td class=num>1.000</td>" in text


def test_mismatched_inputs_are_a_clear_error() -> None:
    evaluation = _evaluation([_image([], [])], [_found([], [], [])])
    with pytest.raises(QuickstudyError, match="2 ground-truth images but 1 prediction"):
        render_report(ReportData("x", evaluation, [_image([], []), _image([], [])], [_found([], [], [])]))
    with pytest.raises(QuickstudyError, match="different lengths"):
        render_report(ReportData("x", evaluation, [_image([[1, 1, 5, 5]], [])], [_found([], [], [])]))


def test_unwritable_report_path_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(QuickstudyError, match="cannot write report"):
        write_report(blocker / "report.html", _report([_image([], [])], [_found([], [], [])]))


def test_rows_from_store_samples_and_detections() -> None:
    from types import SimpleNamespace as NS

    sample = NS(
        path="/x/a.png",
        boxes=[
            NS(xyxy=(1, 2, 3, 4), allowed=frozenset({"pit"})),
            NS(xyxy=(5, 6, 7, 8), allowed=frozenset({"a", "b"})),
        ],
    )
    assert truth_row(sample) == {
        "image": "/x/a.png",
        "name": "a.png",
        "boxes": [(1, 2, 3, 4), (5, 6, 7, 8)],
        "labels": ["pit", None],
    }
    found = prediction_row([NS(box=(1, 2, 3, 4), class_name=UNKNOWN, score=0.7)])
    assert found == {"boxes": [(1, 2, 3, 4)], "labels": [UNKNOWN], "scores": [0.7]}
