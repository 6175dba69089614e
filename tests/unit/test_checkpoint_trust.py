"""Checkpoints are outside data: loading one must never run code, and a broken one is one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from quickstudy.errors import QuickstudyError
from quickstudy.train import load_checkpoint, save_checkpoint
from quickstudy.train.checkpoint import FORMAT, FORMAT_VERSION, upgrade_checkpoint


class _Exploit:
    """Unpickling this object runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> Path:
    torch.save(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "detector", "x": _Exploit(marker)}, path
    )
    return path


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = _malicious(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(
        QuickstudyError,
        match=r"checkpoint\.pt: holds Python objects other than tensors and plain containers \(posix\.system\)",
    ):
        load_checkpoint(file)
    assert not marker.exists()


def test_a_crafted_model_version_is_refused_by_the_model_folder(tmp_path: Path) -> None:
    from quickstudy.detect.versions import ModelFolder

    marker = tmp_path / "pwned"
    (tmp_path / "m" / "versions").mkdir(parents=True)
    _malicious(tmp_path / "m" / "versions" / "v1.pt", marker)
    with pytest.raises(QuickstudyError, match=r"v1\.pt: holds Python objects .*\(posix\.system\)"):
        ModelFolder(tmp_path / "m").versions()
    assert not marker.exists()


def test_a_checkpoint_truncated_to_a_few_kilobytes_is_one_line(tmp_path: Path) -> None:
    file = save_checkpoint(tmp_path / "checkpoint.pt", {"kind": "x", "model": {"w": torch.zeros(4096)}})
    file.write_bytes(file.read_bytes()[:3000])
    with pytest.raises(QuickstudyError, match=r"checkpoint\.pt: not a readable checkpoint"):
        load_checkpoint(file)


def test_an_old_checkpoint_with_numpy_values_loads_after_upgrade(tmp_path: Path) -> None:
    file = tmp_path / "checkpoint.pt"
    old = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "x", "threshold": np.float64(0.25)}
    old["array"] = np.arange(3, dtype=np.float32)
    old["where"] = Path("runs/a")
    torch.save(old, file)
    with pytest.raises(QuickstudyError, match=r"quickstudy models upgrade"):
        load_checkpoint(file)
    upgrade_checkpoint(file)
    payload = load_checkpoint(file, kind="x")
    assert payload["threshold"] == 0.25 and isinstance(payload["threshold"], float)
    assert torch.equal(payload["array"], torch.tensor([0.0, 1.0, 2.0]))
    assert payload["where"] == "runs/a"


def test_upgrade_refuses_what_it_cannot_turn_into_plain_data(tmp_path: Path) -> None:
    file = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "x", "odd": {1, 2}}, file)
    with pytest.raises(QuickstudyError, match=r"holds a set"):
        upgrade_checkpoint(file)


def test_models_upgrade_re_saves_a_trusted_old_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quickstudy.cli import main
    from quickstudy.detect.versions import ModelFolder

    versions = tmp_path / "m" / "versions"
    versions.mkdir(parents=True)
    old = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "detector", "version": 1}
    torch.save(
        {**old, "classes": ["a"], "note": np.str_("old"), "threshold": np.float32(0.5)}, versions / "v1.pt"
    )
    assert main(["models", "list", "--model", str(tmp_path / "m")]) == 2
    assert "quickstudy models upgrade --model" in capsys.readouterr().err
    assert main(["models", "upgrade", "--model", str(tmp_path / "m")]) == 0
    (info,) = ModelFolder(tmp_path / "m").versions()
    assert info.note == "old" and info.classes == ["a"]


def test_models_list_says_how_each_version_sees_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from quickstudy.cli import main
    from quickstudy.detect.versions import ModelFolder

    folder = ModelFolder(tmp_path / "m")
    folder.save({"classes": ["a"], "config": {"image_size": 512, "channels": 3, "tiling": True}})
    folder.save({"classes": ["a"], "config": {}})  # saved before these fields existed
    assert main(["models", "list", "--model", str(tmp_path / "m"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["input"] == {"image_size": 512, "channels": 3, "tiling": True}
    assert listed[1]["input"] == {"image_size": 200, "channels": 1, "tiling": False}


def test_upgrade_never_runs_a_crafted_file_either(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = _malicious(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(
        QuickstudyError, match=r"checkpoint\.pt: holds posix\.system, which cannot be converted"
    ):
        upgrade_checkpoint(file)
    assert not marker.exists()
