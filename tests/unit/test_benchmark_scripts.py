"""Every benchmark script still imports and explains itself (they run on a GPU lease, not in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_error_kinds_sorts_each_false_positive_into_its_kind() -> None:
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(BENCHMARKS))
    from p2_error_kinds import error_kinds

    truth = [[0.0, 0, 100, 100], [120, 120, 180, 180]]
    detections = [  # (box, score), best first
        ([0.0, 0, 100, 70], 0.9),  # found: IoU 0.7 with the first box
        ([0.0, 30, 100, 100], 0.8),  # IoU 0.7 with it too, 0.4 with the one above: a duplicate
        ([130.0, 130, 150, 150], 0.7),  # inside the second box
        ([0.0, 150, 20, 170], 0.6),  # on clean surface
        ([120.0, 120, 180, 180], 0.5),  # found
        ([0.0, 0, 10, 10], 0.4),  # ranked below full recall: not counted
    ]
    boxes = torch.tensor([d[0] for d in detections])
    out = {"boxes": boxes, "scores": torch.tensor([d[1] for d in detections]), "labels": torch.zeros(6)}
    predictor = SimpleNamespace(raw=lambda paths: [out])
    sample = SimpleNamespace(path="a.jpg", boxes=[SimpleNamespace(xyxy=b) for b in truth])
    result = error_kinds(predictor, [sample], recall=1.0)  # type: ignore[arg-type]
    assert result["found"] == 2 and result["recall_reached"] == 1.0
    assert result["errors"] == {
        "duplicate": 1,
        "part_of_box": 1,
        "spans_boxes": 0,
        "loose": 0,
        "background": 1,
    }


def test_p2_seeds_averages_runs_and_names_a_broken_file(tmp_path: Path) -> None:
    def run(seed: int, map50: float) -> Path:
        report = {"mAP50": map50, "mAP": 0.3, "AP50_agnostic": 0.7, "AR100_agnostic_50": 0.9}
        variant = {**report, "mAP50": map50 + 0.01, "AP50": {"crazing": 0.5}}
        payload = {"args": {"seed": seed}, "ours": {"equal": {**report, "AP50": {"crazing": 0.4}}}}
        payload["ours"]["equal"]["inference_variants"] = {"proposals=100": variant}
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(payload))
        return path

    script = [sys.executable, str(BENCHMARKS / "p2_seeds.py")]
    runs = [str(run(0, 0.68)), str(run(1, 0.70)), str(run(2, 0.72))]
    result = subprocess.run([*script, *runs, "--json"], capture_output=True, text=True, timeout=60)
    summary = json.loads(result.stdout)["summary"]
    assert summary["mAP50"] == pytest.approx([0.70, 0.02])
    assert summary["AP50 crazing"] == pytest.approx([0.4, 0.0])
    result = subprocess.run(
        [*script, *runs, "--variant", "proposals=100", "--json"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(result.stdout)["summary"]["mAP50"] == pytest.approx([0.71, 0.02])
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"ours": ')
    no_ap50 = tmp_path / "no-ap50.json"
    no_ap50.write_text(
        json.dumps({"args": {"seed": 3}, "ours": {"equal": {c: 0.5 for c in ("mAP50", "mAP")}}})
    )
    for broken in (truncated, no_ap50):
        result = subprocess.run([*script, runs[0], str(broken)], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and str(broken) in result.stderr
