"""benchmarks/tile_threshold.py builds stores whose boxes reach the size asked for, measured as the tiling
rule measures it, and sums its runs per size and arm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from quickstudy.detect import training
from quickstudy.labels import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from tile_threshold import build_store, median_input_side, summary


def test_the_store_reaches_the_median_box_size_asked_for_as_the_tiling_rule_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build_store(tmp_path, 7.0, 64, 48, train_frames=8, test_frames=2, seed=0)
    assert built["frame"] > 64  # a frame larger than the input: the boxes shrink to reach 7 px
    assert built["median_input_side"] == pytest.approx(7.0, rel=0.1)
    with Store.open(built["store"], create=False) as store:
        samples = store.samples("train")
        assert len(samples) == 8 and len(store.samples("test")) == 2
        assert {(s.width, s.height) for s in samples} == {(built["frame"], built["frame"])}
        side = median_input_side(samples, 64)
    assert side == pytest.approx(built["median_input_side"], abs=0.01)
    # the number needs_tiling compares with TILE_BELOW is this one
    monkeypatch.setattr(training, "TILE_BELOW", side + 0.01)
    assert training.needs_tiling(samples, 64)
    monkeypatch.setattr(training, "TILE_BELOW", side - 0.01)
    assert not training.needs_tiling(samples, 64)


def test_a_size_above_the_defects_own_is_refused(tmp_path: Path) -> None:
    # defects of about 12 px at their own resolution cannot letterbox to 40 px in a frame >= the input
    with pytest.raises(ValueError, match="target 40 px"):
        build_store(tmp_path, 40.0, 64, 48, train_frames=8, test_frames=2, seed=0)
    assert not (tmp_path / "store.qs").exists()


def test_summary_averages_each_arm_over_the_seeds() -> None:
    def run(seed: int, tiling: str, map50: float, recall: float) -> dict[str, object]:
        return {
            "target": 9.0,
            "seed": seed,
            "frame": 380 + seed,
            "median_input_side": 9.0 + seed,
            "tiling": tiling,
            "mAP50": map50,
            "recall50_agnostic": recall,
        }

    runs = [run(0, "on", 0.2, 0.5), run(0, "off", 0.1, 0.3), run(1, "on", 0.4, 0.7), run(1, "off", 0.3, 0.1)]
    (row,) = summary(runs)
    assert row["mAP50_on"] == pytest.approx(0.3) and row["mAP50_off"] == pytest.approx(0.2)
    assert row["recall_on"] == pytest.approx(0.6) and row["recall_off"] == pytest.approx(0.2)
    assert row["median_input_side"] == 9.5 and row["frame"] == [380, 381] and row["seeds"] == [0, 1]
