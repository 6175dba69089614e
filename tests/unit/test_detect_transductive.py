"""learn --transductive: a new prototype moves towards confident proposals of unlabelled images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from quickstudy.detect import fewshot
from quickstudy.detect.memory import ClassMemory
from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
from quickstudy.labels.records import Sample

BASE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
NEW = F.normalize(torch.tensor([0.0, 0.6, 0.8]), dim=0)
TRUE_NEW = torch.tensor([0.0, 0.0, 1.0])  # where the new type's unlabelled boxes really lie


def model_with(proposals: list[dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch) -> DefectDetector:
    model = DefectDetector(["dent", "pit"], DetectorConfig(**TINY))
    model.memory = ClassMemory(["dent", "pit"], BASE).add("crack", NEW)
    monkeypatch.setattr(fewshot.Predictor, "proposals", lambda self, images: proposals[: len(images)])
    return model


def proposal(embeddings: list[list[float]], defect: list[float]) -> dict[str, torch.Tensor]:
    return {"embeddings": torch.tensor(embeddings), "defect_scores": torch.tensor(defect)}


def test_the_new_prototype_moves_towards_its_unlabelled_boxes_and_the_base_ones_stay(monkeypatch):
    found = [proposal([[0.0, 0.1, 1.0], [0.05, 0.0, 1.0], [0.0, 0.0, 2.0]], [0.9, 0.8, 0.95])]
    model = model_with(found, monkeypatch)
    before = model.memory.prototypes.clone()
    assert fewshot.refine_on_images(model, ["crack"], [5], [Path("u.png")], steps=3) == 3
    after = model.memory.prototypes
    assert torch.equal(after[:2], before[:2])
    assert float(after[2] @ TRUE_NEW) > float(before[2] @ TRUE_NEW) + 0.02
    assert float(after[2].norm()) == pytest.approx(1.0)


def test_unconfident_proposals_and_ones_near_a_base_prototype_hardly_move_it(monkeypatch):
    found = [proposal([[0.0, 0.0, 1.0], [1.0, 0.0, 0.05]], [0.1, 0.99])]  # crack-like but weak; a dent
    model = model_with(found, monkeypatch)
    before = model.memory.prototypes[2].clone()
    assert fewshot.refine_on_images(model, ["crack"], [5], [Path("u.png")], steps=3) == 1
    assert float(model.memory.prototypes[2] @ before) > 0.99


def test_no_confident_proposal_leaves_the_memory_as_it_was(monkeypatch):
    model = model_with([proposal([[0.0, 0.0, 1.0]], [0.2])], monkeypatch)
    memory = model.memory
    assert fewshot.refine_on_images(model, ["crack"], [5], [Path("u.png")], steps=3) == 0
    assert model.memory is memory


def test_unlabelled_images_are_other_train_images_and_never_the_support(tmp_path):
    samples = [
        Sample(i, tmp_path / f"{i}.png", 8, 8, split, [], checked=True)
        for i, split in enumerate(["train", "train", "test", "train"])
    ]

    class Store:
        def samples(self, split=None):
            return [s for s in samples if split is None or s.split == split]

    chosen = fewshot.unlabelled_images(Store(), [(tmp_path / "0.png", [(0.0, 0.0, 1.0, 1.0)])])
    assert chosen == [tmp_path / "1.png", tmp_path / "3.png"]


def test_learn_refuses_a_negative_number_of_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from quickstudy.cli import main

    argv = ["learn", "--model", "m", "--store", "s", "--class", "a", "--from-store", "--transductive", "-1"]
    assert main(argv) == 2
    assert "--transductive must be at least 0 steps, got -1" in capsys.readouterr().err
