"""P8 Omniglot multi-task, a short run through the command line: every task beats chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quickstudy.cli import main


def test_a_short_shared_trunk_run_beats_chance_on_every_task(
    shared_data: Path, omniglot_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    run = tmp_path / "shared"
    common = ["--data-root", str(shared_data), "--device", "cpu"]
    train = ["multitask", "train", "--benchmark", "omniglot-mtl", "--arch", "shared", "--tasks", "5"]
    assert main([*train, "--steps", "60", "--width", "16", "--lr", "3e-3", "--out", str(run), *common]) == 0
    capsys.readouterr()
    assert main(["multitask", "eval", str(run), "--baseline", str(run), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    stored = json.loads((run / "results.json").read_text())
    n_classes = dict(zip(stored["config"]["task_names"], stored["config"]["n_classes"], strict=True))
    assert len(report["accuracy"]) == 5
    for name, accuracy in report["accuracy"].items():
        assert accuracy > 1.0 / n_classes[name], (name, accuracy)
    assert report["mean_accuracy"] > 2.0 * sum(1.0 / n for n in n_classes.values()) / 5
    assert report["accuracy"] == pytest.approx(stored["accuracy"])  # eval of the checkpoint = train's
    assert report["delta_m"] == 0.0
