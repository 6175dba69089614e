"""Few-shot learning on real data through the command line: Omniglot P6 and NEU P7 in miniature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quickstudy.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def from_elsewhere(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Run the next commands from an empty folder, with no $QUICKSTUDY_DATA: only the run knows the data."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("QUICKSTUDY_DATA", raising=False)


def test_omniglot_5way_1shot_after_100_meta_steps_beats_chance_clearly(
    shared_data: Path,
    omniglot_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = str(tmp_path / "protonet")
    common = ["--data-root", str(shared_data)]
    train = ["fewshot", "train", "--dataset", "omniglot", "--algo", "protonet", "--way", "5", "--shot", "1"]
    assert main([*train, *common, "--train-way", "5", "--width", "32", "--steps", "100", "--out", out]) == 0
    from_elsewhere(monkeypatch, tmp_path / "elsewhere")
    report = run_json(capsys, ["fewshot", "eval", "--model", out, "--way", "5", "--shot", "1",
                               "--episodes", "100", "--json"])  # fmt: skip
    assert report["episodes"] == 100 and report["algo"] == "protonet"
    assert report["accuracy"] - report["ci95"] > 0.6  # chance is 0.2
    assert "per_class" not in report  # 1692 test classes: too many to list


def test_neu_p7_five_base_steps_recognise_the_novel_classes_above_chance(
    shared_data: Path,
    neu_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = str(tmp_path / "neu")
    common = ["--data-root", str(shared_data)]
    train = ["fewshot", "train", "--dataset", "neu", "--algo", "protonet", "--way", "6", "--shot", "5"]
    assert main([*train, *common, "--image-size", "32", "--width", "16", "--steps", "5", "--out", out]) == 0
    config = torch.load(Path(out) / "checkpoint.pt", weights_only=False)["config"]
    assert config["train_way"] == 4 and config["novel"] == ["pitted_surface", "scratches"]  # BASE only
    from_elsewhere(monkeypatch, tmp_path / "elsewhere")
    report = run_json(capsys, ["fewshot", "eval", "--model", out, "--way", "6", "--shot", "5",
                               "--episodes", "50", "--json"])  # fmt: skip
    assert report["focus"] == ["pitted_surface", "scratches"]
    # chance is 1/6: five steps on the four BASE classes already tell the two novel ones apart (0.36 ± 0.04 measured)
    assert report["focus_accuracy"] - report["focus_ci95"] > 0.25
    assert len(report["per_class"]) == 6
    assert all(set(pr) == {"precision", "recall"} for pr in report["per_class"].values())


def write_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((20, 20), 40 * i % 255, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_bad_input_is_one_clear_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = str(write_folder(tmp_path / "small", {"a": 7, "b": 7, "c": 2}))
    base = [
        "fewshot",
        "train",
        "--dataset",
        small,
        "--algo",
        "protonet",
        "--image-size",
        "16",
        "--steps",
        "1",
    ]
    assert main([*base, "--way", "5", "--shot", "1", "--out", str(tmp_path / "r1")]) == 2
    assert "3 classes, fewer than the" in capsys.readouterr().err
    assert main([*base, "--way", "3", "--shot", "1", "--train-way", "3", "--out", str(tmp_path / "r2")]) == 2
    assert "class 'c' has 2 images, fewer than the 6" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                "--way",
                "2",
                "--shot",
                "1",
                "--train-way",
                "2",
                "--query",
                "1",
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tmp_path / "ok" / "checkpoint.pt").read_bytes()[:64])
    assert main(["fewshot", "eval", "--model", str(corrupt), "--way", "2", "--shot", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corrupt.pt" in err and "Traceback" not in err
    maml = [
        "fewshot",
        "train",
        "--dataset",
        small,
        "--algo",
        "maml",
        "--image-size",
        "16",
        "--way",
        "2",
        "--shot",
        "1",
    ]
    assert main([*maml, "--out", str(tmp_path / "ok")]) == 2
    assert "algo='protonet', not 'maml'" in capsys.readouterr().err
