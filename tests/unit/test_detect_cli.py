"""The detector's commands: --fit-all, one device default, and the one-line answers to careless input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from quickstudy.cli import build_parser, main

from .labels_fixtures import small_store


def test_train_fit_all_trains_and_calibrates_on_every_train_image(tmp_path: Path) -> None:
    from quickstudy.detect.versions import ModelFolder

    small_store(tmp_path, n_images=12).close()  # 10 TRAIN images: two of them are held out by default
    store = str(tmp_path / "labels.qs")
    common = ["--store", store, "--arch", "tiny", "--epochs", "1", "--batch-size", "5", "--device", "cpu"]
    torch.set_num_threads(1)
    for out, fit_all, trained in (("held", [], 8), ("all", ["--fit-all"], 10)):
        assert main(["train", *common, "--out", str(tmp_path / out), *fit_all]) == 0
        recorded = ModelFolder(tmp_path / out).load()["train"]
        assert (recorded["n_train"], recorded["n_validation"]) == (trained, 10 - trained or 10)
        assert recorded["hold_out"] is not bool(fit_all)


def test_train_options_reach_the_detector_config() -> None:
    from quickstudy.cli.detect import training_keywords
    from quickstudy.detect.model import DetectorConfig

    parse = build_parser("train").parse_args
    given = training_keywords(parse(["train", "--store", "s", "--out", "o", "--proposals-per-level", "4"]))
    assert given["config"].proposals_per_level == 4
    default = training_keywords(parse(["train", "--store", "s", "--out", "o"]))
    assert default["config"].proposals_per_level == DetectorConfig().proposals_per_level


@pytest.mark.parametrize("command", ["train", "predict", "eval", "learn"])
def test_device_defaults_to_cuda_when_available_else_cpu(command: str) -> None:
    argv = {
        "train": ["--store", "s", "--out", "o"],
        "predict": ["--model", "m", "a.jpg"],
        "eval": ["--model", "m", "--store", "s"],
        "learn": ["--model", "m", "--store", "s", "--class", "c", "--from-store"],
    }[command]
    args = build_parser(command).parse_args([command, *argv])
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert build_parser(command).parse_args([command, *argv, "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        build_parser(command).parse_args([command, *argv, "--device", "gpu"])


def test_a_missing_store_names_the_command_that_creates_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--store", str(tmp_path / "none.qs"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "`quickstudy data import`" in err and err.count("\n") == 1


def test_predict_on_a_folder_says_it_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    assert main(["predict", "--model", str(tmp_path / "m"), str(tmp_path / "images")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'images'}: is a folder; give its images, e.g. {tmp_path / 'images' / '*.jpg'}\n"
    )


def test_learn_counts_an_image_given_twice_once_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quickstudy.detect.fewshot

    small_store(tmp_path).close()
    called: dict[str, Any] = {}
    monkeypatch.setattr(quickstudy.detect.fewshot, "learn_class", lambda *a, **kw: called.update(kw) or 2)
    monkeypatch.chdir(tmp_path)
    images = ["img/im0.png", "./img/im0.png", str(tmp_path / "img" / "im1.png"), "img/../img/im1.png"]
    argv = ["learn", "--model", "m", "--store", "labels.qs", "--class", "a", "--images", *images]
    assert main(argv) == 0
    assert called["images"] == ["img/im0.png", str(tmp_path / "img" / "im1.png")]
    assert called["localizer"] is None  # not said: learn_class decides from what the detector proposes
    assert called["recognizer"] is None  # likewise, from held-out support images
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "note: ./img/im0.png is img/im0.png again; it counts once",
        f"note: img/../img/im1.png is {tmp_path / 'img' / 'im1.png'} again; it counts once",
    ]


@pytest.mark.parametrize(
    ("flag", "recognizer"),
    [
        ([], None),
        (["--adapt-recognizer"], True),
        (["--adapt-recognizer", "off"], False),
        (["--adapt-recognizer", "auto"], None),
    ],
)
def test_learn_passes_adapt_recognizer_on_off_or_to_choose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], recognizer: bool | None
) -> None:
    import quickstudy.detect.fewshot

    small_store(tmp_path).close()
    called: dict[str, Any] = {}
    monkeypatch.setattr(quickstudy.detect.fewshot, "learn_class", lambda *a, **kw: called.update(kw) or 2)
    monkeypatch.chdir(tmp_path)
    argv = ["learn", "--model", "m", "--store", "labels.qs", "--class", "a", "--from-store", *flag]
    assert main(argv) == 0
    assert called["recognizer"] is recognizer


def test_learn_wants_images_or_from_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["learn", "--model", "m", "--store", "s", "--class", "a"]) == 2
    assert "give either --images IMG... or --from-store" in capsys.readouterr().err
