"""The HTML report: every section, embedded images, known-answer metrics, clear errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from quickstudy.errors import QuickstudyError
from quickstudy.evaluate.report import (
    BACKGROUND,
    SECTIONS,
    UNKNOWN,
    ReportData,
    _confusion_counts,
    _image_level_sweep,
    _ImageResult,
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


def _results(truth, found, threshold=0.5):
    images = [_ImageResult.from_plain(t, f) for t, f in zip(truth, found, strict=True)]
    for image in images:
        image.match(lambda label: threshold)
    return images


def test_perfect_predictions_give_ap_one_and_a_diagonal_confusion() -> None:
    truth = [_image([[2, 2, 12, 12]], ["pit"]), _image([[20, 20, 34, 30]], ["dent"])]
    found = [_found([[2, 2, 12, 12]], ["pit"], [0.9]), _found([[20, 20, 34, 30]], ["dent"], [0.8])]
    text = render_report(ReportData("perfect", CLASSES, truth, found))
    row = re.search(r"<td>pit</td>(.*?)</tr>", text)
    assert row is not None
    cells = re.findall(r"<td class=num>([^<]*)</td>", row.group(1))
    assert cells == ["1", "1", "1.000", "1.000", "0.500", "1.000", "1.000"]  # ..., AP50, AP, threshold, P, R
    rows, columns, counts = _confusion_counts(_results(truth, found), CLASSES)
    assert counts[rows.index("pit"), columns.index("pit")] == 1
    assert counts[rows.index("dent"), columns.index("dent")] == 1
    assert counts.sum() == 2


def test_confusion_counts_misses_false_alarms_unknown_and_low_scores() -> None:
    truth = [_image([[2, 2, 12, 12], [20, 20, 30, 30]], ["pit", "dent"])]
    found = [
        _found(
            [[2, 2, 12, 13], [25, 2, 35, 8], [20, 20, 30, 30], [20, 20, 30, 30]],
            [UNKNOWN, "dent", "dent", "pit"],
            [0.9, 0.7, 0.3, 0.2],  # the true dent is found only below the threshold
        )
    ]
    rows, columns, counts = _confusion_counts(_results(truth, found), CLASSES)
    assert counts[rows.index("pit"), columns.index(UNKNOWN)] == 1
    assert counts[rows.index(BACKGROUND), columns.index("dent")] == 1  # false alarm
    assert counts[rows.index("dent"), columns.index(BACKGROUND)] == 1  # missed
    assert counts.sum() == 3


def test_a_true_box_is_matched_once_by_the_best_scoring_prediction() -> None:
    truth = [_image([[2, 2, 12, 12]], ["pit"])]
    found = [_found([[2, 2, 12, 12], [2, 2, 12, 11]], ["pit", "dent"], [0.6, 0.9])]
    rows, columns, counts = _confusion_counts(_results(truth, found), CLASSES)
    assert counts[rows.index("pit"), columns.index("dent")] == 1
    assert counts[rows.index(BACKGROUND), columns.index("pit")] == 1


def test_per_class_thresholds_keep_what_each_class_allows_and_unknown_gets_the_lowest() -> None:
    truth = [_image([[2, 2, 12, 12], [20, 20, 30, 30], [2, 20, 12, 30]], ["pit", "dent", "pit"])]
    found = [
        _found(
            [[2, 2, 12, 12], [20, 20, 30, 30], [2, 20, 12, 30]], ["pit", "dent", UNKNOWN], [0.4, 0.5, 0.35]
        )
    ]
    data = ReportData("x", CLASSES, truth, found, operating_threshold={"pit": 0.3, "dent": 0.6})
    images = _results(truth, found)
    for image in images:
        image.match(data.threshold)
    rows, columns, counts = _confusion_counts(images, CLASSES)
    assert counts[rows.index("pit"), columns.index("pit")] == 1
    assert counts[rows.index("dent"), columns.index(BACKGROUND)] == 1  # 0.5 is below dent's 0.6
    assert counts[rows.index("pit"), columns.index(UNKNOWN)] == 1  # unknown is held to pit's 0.3
    assert "per class (pit 0.30, dent 0.60)" in render_report(data)


def test_image_level_sweep_known_answer() -> None:
    truth = [_image([[2, 2, 9, 9]], ["pit"]), _image([[2, 2, 9, 9]], ["pit"]), _image([], [])]
    found = [
        _found([[2, 2, 9, 9]], ["pit"], [0.8]),
        _found([[2, 2, 9, 9]], ["pit"], [0.4]),
        _found([[20, 20, 30, 30]], ["pit"], [0.6]),
    ]
    sweep = _image_level_sweep(_results(truth, found), ["pit"])
    at = {round(float(t), 2): i for i, t in enumerate(sweep.thresholds)}
    assert sweep.precision["pit"][at[0.5]] == pytest.approx(1 / 2)  # images 1 and 3 said, 1 right
    assert sweep.recall["pit"][at[0.5]] == pytest.approx(1 / 2)
    assert sweep.precision["pit"][at[0.3]] == pytest.approx(2 / 3)
    assert sweep.recall["pit"][at[0.3]] == pytest.approx(1.0)
    assert np.isnan(sweep.precision["pit"][at[0.9]])  # nothing said: precision undefined


def test_report_holds_every_section_embeds_its_images_and_escapes_names(tmp_path) -> None:
    truth = [_image([[2, 2, 12, 12]], ["<pit>"]), _image([[20, 20, 30, 30]], [None])]
    found = [_found([[2, 2, 12, 12]], ["<pit>"], [0.9]), _found([[0, 0, 5, 5]], ["dent"], [0.7])]
    history = [{"version": 2, "operation": "split", "detail": "line -> pit, dent"}]
    data = ReportData(
        "toy",
        ["<pit>", "dent"],
        truth,
        found,
        0.5,
        history,
        {"mAP50": 0.5, "train": {"seconds": 1.5}},
        "qs demo",
    )
    path = write_report(tmp_path / "out" / "report.html", data)
    text = path.read_text(encoding="utf-8")
    for key, _title in SECTIONS:
        assert f'<section id="{key}">' in text
    assert text.count("data:image/png;base64,") >= 5  # PR, sweep, confusion and two example grids
    assert not re.search(r"""(src|href)=['"]https?:""", text)  # nothing fetched from outside
    assert "&lt;pit&gt;" in text and "<pit>" not in text
    assert "line -&gt; pit, dent" in text
    assert "<pre class=command>qs demo</pre>" in text
    assert "pycocotools" in text and "numpy" in text


def test_mismatched_inputs_are_a_clear_error() -> None:
    with pytest.raises(QuickstudyError, match="2 ground-truth images but 1 prediction"):
        render_report(ReportData("x", CLASSES, [_image([], []), _image([], [])], [_found([], [], [])]))
    with pytest.raises(QuickstudyError, match="different lengths"):
        render_report(ReportData("x", CLASSES, [_image([[1, 1, 5, 5]], [])], [_found([], [], [])]))


def test_unwritable_report_path_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    data = ReportData("x", CLASSES, [_image([], [])], [_found([], [], [])])
    with pytest.raises(QuickstudyError, match="cannot write report"):
        write_report(blocker / "report.html", data)


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
    assert truth_row(sample, ["pit", "a"])["labels"] == ["pit", "a"]
    found = prediction_row([NS(box=(1, 2, 3, 4), class_name=UNKNOWN, score=0.7)])
    assert found == {"boxes": [(1, 2, 3, 4)], "labels": [UNKNOWN], "scores": [0.7]}
