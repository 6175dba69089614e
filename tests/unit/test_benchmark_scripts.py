"""Every benchmark script still imports and explains itself (they run on a GPU lease, not in CI)."""

from __future__ import annotations

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
