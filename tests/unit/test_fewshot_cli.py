"""``quickstudy fewshot``: a run remembers its data, --model names what is scored, pretraining runs score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import quickstudy.cli.fewshot
from quickstudy.cli import build_parser, main
from quickstudy.data.classification import fewshot_sets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_classes(root: Path, classes: int = 4, per_class: int = 8) -> Path:
    """Class folders of 16 px images: a fixed random pattern per class plus noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        pattern = rng.integers(0, 200, (16, 16))
        for i in range(per_class):
            image = (pattern + rng.integers(0, 56, (16, 16))).astype(np.uint8)
            Image.fromarray(image).save(root / f"c{c}" / f"{i}.png")
    return root


def json_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


TRAIN = ["fewshot", "train", "--algo", "protonet", "--way", "2", "--shot", "1", "--train-way", "2"]
TRAIN += ["--query", "2", "--image-size", "16", "--width", "4", "--steps", "2", "--device", "cpu"]
EVAL = ["--way", "2", "--shot", "1", "--query", "2", "--episodes", "5", "--device", "cpu", "--json"]


def test_eval_reads_the_data_root_the_run_was_trained_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = write_classes(tmp_path / "classes")
    roots: list[Path] = []

    def sets_of(dataset: str, root: Path, size: int, novel: Any = ()) -> Any:
        roots.append(root)  # a stand-in for omniglot under that root: the class folders
        return fewshot_sets(str(classes), root, size, novel)

    monkeypatch.setattr(quickstudy.cli.fewshot, "fewshot_sets", sets_of)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main([*TRAIN, "--dataset", "omniglot", "--data-root", "shared", "--out", "../run"]) == 0
    monkeypatch.chdir(tmp_path / "b")  # another folder, no --data-root, no $QUICKSTUDY_DATA
    monkeypatch.delenv("QUICKSTUDY_DATA", raising=False)
    report = json_of(capsys, ["fewshot", "eval", "--model", "../run", *EVAL])
    assert roots == [tmp_path / "a" / "shared", tmp_path / "a" / "shared"]
    assert report["model"] == "../run" and report["scoring"] == "learner"
    json_of(capsys, ["fewshot", "eval", "--model", "../run", "--data-root", "elsewhere", *EVAL])
    assert roots[-1] == Path("elsewhere")


def test_the_old_checkpoint_option_still_names_the_run_but_is_not_advertised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser("fewshot")
    argv = ["fewshot", "eval", "--way", "5", "--shot", "1"]
    assert parser.parse_args([*argv, "--checkpoint", "runs/pn"]).model == "runs/pn"
    assert parser.parse_args([*argv, "--model", "runs/pn"]).model == "runs/pn"
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["fewshot", "eval", "--help"])
    shown = capsys.readouterr().out
    assert "--model DIR" in shown and "--checkpoint" not in shown


def test_a_pretraining_run_is_scored_by_nearest_mean_with_test_time_views(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quickstudy.data.classification import folder_classes
    from quickstudy.pretrain import pretrain

    classes = write_classes(tmp_path / "classes")
    images = folder_classes(classes, 32).images
    pretrain(
        images, out_dir=tmp_path / "ssl", backbone_kwargs={"width": 16}, image_size=16, steps=2, batch_size=8
    )
    argv = ["fewshot", "eval", "--model", str(tmp_path / "ssl"), *EVAL]
    capsys.readouterr()
    assert main(argv) == 2
    assert "the run does not say which data to test on; give --dataset" in capsys.readouterr().err
    report = json_of(capsys, [*argv, "--dataset", str(classes), "--tta", "8", "--episodes", "40"])
    assert (report["algo"], report["scoring"], report["tta"]) == ("simclr pretraining", "nearest-mean", 8)
    assert report["accuracy"] > 0.8  # chance is 0.5; the classes' patterns differ even to a random network
    assert main([*argv, "--dataset", str(classes), "--scoring", "learner"]) == 2
    assert "a pretraining run has no learner; use --scoring nearest-mean" in capsys.readouterr().err
