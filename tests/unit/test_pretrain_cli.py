"""``quickstudy pretrain`` on a tiny label store, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quickstudy.backbones import build_backbone, load_backbone_weights
from quickstudy.cli import main
from quickstudy.labels import Store
from quickstudy.labels.formats import import_folder


def _store_of_textures(tmp_path: Path, count: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = tmp_path / "images" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / f"{i}.png")
    store_path = tmp_path / "store.qs"
    with Store.open(store_path) as store:
        import_folder(store, tmp_path / "images", add_classes=True)
    return store_path


def test_pretrain_command_writes_a_checkpoint_that_init_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store_of_textures(tmp_path)
    out = tmp_path / "run"
    argv = ["pretrain", "--store", str(store), "--backbone", "conv4", "--width", "4", "--method", "byol"]
    argv += [
        "--size",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n") :])  # after the progress bar
    assert summary["images"] == 12 and summary["out"] == str(out)
    load_backbone_weights(build_backbone("conv4", width=4), out, backbone_name="conv4")


def test_missing_store_and_empty_split_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--store", str(tmp_path / "none.qs"), "--out", str(tmp_path / "r")]) == 2
    assert "label store not found" in capsys.readouterr().err
    store = _store_of_textures(tmp_path)
    assert main(["pretrain", "--store", str(store), "--split", "train", "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "split 'train'" in error and error.count("\n") == 1


def test_pretrain_detector_records_its_arch_and_refuses_options_of_other_backbones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
    from quickstudy.detect.training import load_pretrained_backbone

    store = _store_of_textures(tmp_path)
    out = tmp_path / "detector"
    argv = ["pretrain", "--store", str(store), "--backbone", "detector", "--arch", "tiny", "--size", "32"]
    assert main([*argv, "--steps", "1", "--batch-size", "4", "--device", "cpu", "--out", str(out)]) == 0
    assert "pretrained detector (tiny) with simclr on 12 images" in capsys.readouterr().out
    record = load_pretrained_backbone(DefectDetector(["a", "b"], DetectorConfig(**TINY)), out)
    assert (record["arch"], record["image_size"], record["steps"]) == ("tiny", 32, 1)
    assert main([*argv, "--width", "8", "--out", str(tmp_path / "x")]) == 2
    assert "--width is for conv4" in capsys.readouterr().err
    assert main(["pretrain", "--store", str(store), "--arch", "tiny", "--out", str(tmp_path / "y")]) == 2
    assert "--arch is for --backbone detector, not conv4" in capsys.readouterr().err
