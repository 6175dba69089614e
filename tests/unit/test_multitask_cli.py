"""``quickstudy multitask`` on a made-up Omniglot: a run remembers its data, and --model names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from quickstudy.cli import build_parser, main


def fake_omniglot(root: Path, alphabets: int = 2, characters: int = 2) -> Path:
    """``root/omniglot/images_{background,evaluation}/<alphabet>/characterNN/NNNN_DD.png``, 20 drawings
    each (the evaluation part, which P8 does not use, holds one alphabet)."""
    rng = np.random.default_rng(0)
    parts = [("images_background", a) for a in range(alphabets)] + [("images_evaluation", alphabets)]
    for part, a in parts:
        for c in range(characters):
            folder = root / "omniglot" / part / f"Alphabet_{a}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            stroke = rng.integers(0, 2, (28, 28)).astype(bool)
            for drawer in range(1, 21):
                ink = stroke ^ (rng.random((28, 28)) < 0.05)
                Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(
                    folder / f"{c:04d}_{drawer:02d}.png"
                )
    return root


def json_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n") :])


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUICKSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("QUICKSTUDY_DATA", raising=False)
    return fake_omniglot(tmp_path / "data")


TRAIN = ["multitask", "train", "--benchmark", "omniglot-mtl", "--steps", "3", "--batch-size", "4"]
TRAIN += ["--width", "4", "--device", "cpu", "--json"]


def test_eval_finds_the_data_the_run_was_trained_on_without_being_told(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    trained = json_of(capsys, [*TRAIN, "--data-root", "data", "--out", "runs/mtl"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no ./data here, no $QUICKSTUDY_DATA
    report = json_of(capsys, ["multitask", "eval", "--model", "../runs/mtl", "--device", "cpu", "--json"])
    assert report["accuracy"] == pytest.approx(trained["accuracy"])
    assert report["model"] == "../runs/mtl"
    old_spelling = json_of(capsys, ["multitask", "eval", "../runs/mtl", "--device", "cpu", "--json"])
    assert old_spelling["accuracy"] == report["accuracy"]


def test_uncertainty_weighting_with_pcgrad_trains_from_the_command_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TRAIN, "--data-root", str(data), "--weighting", "uncertainty", "--combiner", "pcgrad"]
    results = json_of(capsys, [*argv, "--out", str(tmp_path / "run")])
    assert results["method"] == "WeightedCombiner" and len(results["final_weights"]) == 2
    assert main([*argv, "--weighting", "gradnorm", "--out", str(tmp_path / "other")]) == 2
    assert "--weighting gradnorm weights tasks by their gradients" in capsys.readouterr().err


def test_the_positional_run_folder_is_kept_but_not_advertised(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser("multitask")
    assert parser.parse_args(["multitask", "eval", "runs/a", "--json"]).model == "runs/a"
    assert parser.parse_args(["multitask", "eval", "--json", "--model", "runs/b"]).model == "runs/b"
    with pytest.raises(SystemExit):
        parser.parse_args(["multitask", "eval", "runs/a", "--model", "runs/b"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["multitask", "eval", "--help"])
    assert "--model DIR" in capsys.readouterr().out
