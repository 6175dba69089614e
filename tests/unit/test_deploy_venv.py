"""The base install (no `train` extra) predicts with an exported model, in a fresh venv without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quickstudy.deploy.export import export_onnx
from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig, detector_payload
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.versions import ModelFolder

REPO = Path(__file__).resolve().parents[2]

PREDICT = """
import importlib.util, sys
from quickstudy.cli import main
assert importlib.util.find_spec("torch") is None, "torch is installed in the base venv"
sys.exit(main(["predict", "--model", sys.argv[1], *sys.argv[2:], "--threshold", "0.001", "--json"]))
"""


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_the_base_install_predicts_with_an_export_without_torch(tmp_path: Path):
    torch.manual_seed(0)
    model = DefectDetector(["pit", "scratch"], DetectorConfig(**ARCHITECTURES["tiny"], image_size=64)).eval()
    ModelFolder(tmp_path / "model").save(detector_payload(model))
    export = export_onnx(tmp_path / "model", tmp_path / "export")
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80), dtype=np.uint8)).save(image)

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], 120).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = run([*pip, *base], 300)
    if installed.returncode != 0:
        pytest.skip(
            f"the package registry could not give the base dependencies: {installed.stderr.strip()[-300:]}"
        )
    package = run([*pip, "--no-deps", "--no-build-isolation", "-e", str(REPO)], 120)
    if package.returncode != 0:  # no setuptools in the fresh venv: let pip fetch it
        package = run([*pip, "--no-deps", "-e", str(REPO)], 120)
    assert package.returncode == 0, package.stderr

    result = run([str(venv / "bin" / "python"), "-c", PREDICT, str(export), str(image)], 120)
    assert result.returncode == 0, result.stderr
    found = result.stdout
    expected = Predictor.from_dir(tmp_path / "model").predict([image], score_threshold=0.001)[0]
    detections = json.loads(found)[0]["detections"]
    assert len(detections) == len(expected) > 0
    assert [d["class_name"] for d in detections] == [d.class_name for d in expected]
