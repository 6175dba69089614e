"""The threshold picker on constructed score lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickstudy.evaluate.operating import (
    DEFECT_PRESENT,
    operating_points,
    precision_recall_at,
    precision_recall_sweep,
    threshold_for_precision,
)


def test_hits_the_requested_precision_with_the_most_recall() -> None:
    # 100 positives scored 1..100, one negative at 50.5. Flagging all gives precision 100/101 = 0.990,
    # short of 99.5%, so the best threshold stops above the negative (recall 50/100)...
    scores = [*range(1, 101), 50.5]
    positive = [True] * 100 + [False]
    point = threshold_for_precision(scores, positive, 0.995)
    assert point.reached and point.threshold == 51.0
    assert point.precision == 1.0 and point.recall == 0.5
    # ...while 99% precision accepts it: threshold 1, all 101 flagged.
    relaxed = threshold_for_precision(scores, positive, 0.99)
    assert relaxed.threshold == 1.0 and relaxed.recall == 1.0
    assert relaxed.precision == pytest.approx(100 / 101)


def test_non_monotone_precision_is_searched_to_the_end() -> None:
    # Top score is a negative, so the highest thresholds have precision 0; lower ones recover.
    scores = [0.99, *np.linspace(0.9, 0.1, 200).tolist()]
    positive = [False] + [True] * 200
    point = threshold_for_precision(scores, positive, 0.99)
    assert point.reached and point.recall == 1.0
    assert point.precision == pytest.approx(200 / 201)


def test_tied_scores_are_flagged_together() -> None:
    point = threshold_for_precision([0.9, 0.5, 0.5, 0.1], [True, True, False, True], 0.9)
    assert point.threshold == 0.9 and point.flagged == 1 and point.recall == pytest.approx(1 / 3)


def test_unreachable_precision_is_reported_not_faked() -> None:
    # The only positive scores below a negative: every threshold that flags it has precision 0.5.
    point = threshold_for_precision([0.9, 0.8], [False, True], 0.99)
    assert not point.reached and point.recall == 0.0 and math.isinf(point.threshold) and point.flagged == 0
    assert threshold_for_precision([0.9, 0.8], [False, True], 0.5).reached
    assert not threshold_for_precision([0.3, 0.2], [False, False], 0.5).reached


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=60),
    target=st.sampled_from([0.5, 0.8, 0.9, 0.99, 1.0]),
)
def test_the_picked_threshold_meets_the_target_and_no_threshold_does_better(
    data: list[tuple[int, bool]], target: float
) -> None:
    scores = [float(s) for s, _ in data]
    positive = [p for _, p in data]
    point = threshold_for_precision(scores, positive, target)
    best_recall = 0.0
    for threshold in set(scores):
        precision, recall = precision_recall_at(scores, positive, threshold)
        if precision >= target:
            best_recall = max(best_recall, recall)
    if point.reached:
        precision, recall = precision_recall_at(scores, positive, point.threshold)
        assert precision >= target and recall == point.recall == best_recall
    else:
        assert best_recall == 0.0


def test_per_class_and_defect_present() -> None:
    # Three classes, plus defect-free images (-1) that score low on every class.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, -1], 50)
    scores = rng.uniform(0.0, 0.3, size=(200, 3))
    scores[labels == 0, 0] += 0.7
    scores[labels == 1, 1] += 0.7
    scores[labels == 2, 2] += 0.2  # class 2 overlaps the rest: its recall at 99% precision is lower
    points = operating_points(scores, labels, ["a", "b", "c"], 0.99)
    assert set(points) == {"a", "b", "c", DEFECT_PRESENT}
    assert points["a"].recall == 1.0 and points["b"].recall == 1.0
    assert points["c"].reached and points["c"].recall < 1.0
    for name, point in points.items():
        assert point.precision >= 0.99, name
    assert points[DEFECT_PRESENT].positives == 150
    with pytest.raises(ValueError, match="do not fit"):
        operating_points(scores, labels[:-1], ["a", "b", "c"], 0.99)


def test_sweep_gives_precision_and_recall_at_each_threshold() -> None:
    scores, positive = [0.9, 0.6, 0.6, 0.3], [True, False, True, True]
    precision, recall = precision_recall_sweep(scores, positive, [0.95, 0.6, 0.3])
    assert np.isnan(precision[0]) and recall[0] == 0.0  # nothing flagged
    assert precision[1] == pytest.approx(2 / 3) and recall[1] == pytest.approx(2 / 3)  # ties flagged together
    assert precision[2] == pytest.approx(3 / 4) and recall[2] == 1.0
    assert np.isnan(precision_recall_sweep(scores, [False] * 4, [0.5])[1][0])  # no positive: recall undefined


def test_recall_at_a_false_alarm_rate_flags_at_most_that_share_of_good_parts() -> None:
    from quickstudy.evaluate.operating import recall_at_false_alarm_rate

    rng = np.random.default_rng(0)
    good = rng.uniform(0, 0.6, 300)
    bad = rng.uniform(0.3, 1.0, 100)
    scores = np.concatenate([good, bad])
    defective = np.r_[np.zeros(300, bool), np.ones(100, bool)]
    point = recall_at_false_alarm_rate(scores, defective, ~defective, 0.01)
    assert point["false_alarm_rate"] <= 0.01 and (good >= point["threshold"]).sum() == 3
    assert point["recall"] == (bad >= point["threshold"]).mean()
    lower = np.sort(good)[::-1][3]  # one more good part flagged would break the 1%
    assert lower < point["threshold"] <= np.sort(good)[::-1][2]


def test_defect_present_counts_false_alarms_on_checked_defect_free_images_only() -> None:
    from quickstudy.evaluate.detection import defect_present

    scores = np.array([[0.9, 0.0], [0.0, 0.2], [0.6, 0.0], [0.0, 0.0], [0.5, 0.9]])
    defective = np.array([True, True, False, False, False])
    free = [False, False, True, True, False]  # the last image was never checked: not a false alarm
    result = defect_present(scores, ["a", "b"], {"a": 0.5, "b": 0.3}, defective, free)
    assert result["precision"] == 1 / 3 and result["recall"] == 0.5
    assert result["false_alarm_rate"] == 0.5 and result["defect_free_images"] == 2
    assert result["recall_at_1pct_false_alarms"] == 0.5  # above 0.6: only the 0.9 image
