"""How each type's boxes are named (``quickstudy eval``'s ``naming`` and ``called_unknown``): counted
by hand on a small case, a type the model lacks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from quickstudy.detect.evaluation import box_names, box_naming, naming_metrics
from quickstudy.detect.memory import UNKNOWN, Detection
from quickstudy.labels.records import LabelledBox, Sample


def box(box_id: int, x: float, *names: str) -> LabelledBox:
    return LabelledBox(box_id, (x, 0.0, x + 10.0, 10.0), frozenset(names))


def found(x: float, name: str, score: float = 0.9) -> Detection:
    return Detection((x, 0.0, x + 10.0, 10.0), name, score, 0.5, None)


def test_each_box_is_counted_once_by_how_its_best_detection_names_it() -> None:
    samples = [
        Sample(
            1, Path("a.png"), 100, 20, "test", [box(1, 0, "dent"), box(2, 20, "dent"), box(3, 40, "crack")]
        ),
        Sample(
            2, Path("b.png"), 100, 20, "test", [box(4, 0, "crack"), box(5, 20), box(6, 40, "dent", "pit")]
        ),
    ]
    detections = [
        [found(0, "dent"), found(40, UNKNOWN), found(41, "dent", 0.2)],  # box 2 missed
        [found(0, "dent"), found(20, "dent"), found(40, "pit")],  # boxes 5, 6 carry no single type
    ]
    # what took each box: the best-scored detection overlapping it, each detection one box (the 0.2
    # "dent" on box 3 loses to the unknown at 0.9)
    assert box_names(samples, detections) == {"dent": {"dent": 1, None: 1}, "crack": {UNKNOWN: 1, "dent": 1}}
    counts = box_naming(samples, detections)
    assert counts == {"dent": {"named_right": 1, "missed": 1}, "crack": {"unknown": 1, "named_other": 1}}
    metrics = naming_metrics(counts, ["dent", "pit"])
    assert metrics["naming"]["crack"] == {
        "known": False,
        "boxes": 2,
        "named_right": 0.0,
        "unknown": 0.5,
        "named_other": 0.5,
        "missed": 0.0,
    }
    assert metrics["naming"]["dent"]["known"] and metrics["naming"]["dent"]["missed"] == 0.5
    assert metrics["called_unknown"] == {"known_types": 0.0, "new_types": 0.5}


def test_without_boxes_of_a_side_its_unknown_share_is_none() -> None:
    samples = [Sample(1, Path("a.png"), 100, 20, "test", [box(1, 0, "dent")])]
    metrics = naming_metrics(box_naming(samples, [[found(0, UNKNOWN)]]), ["dent"])
    assert metrics["called_unknown"] == {"known_types": 1.0, "new_types": None}
    with pytest.raises(ValueError):  # one list of detections per image
        box_naming(samples, [])
