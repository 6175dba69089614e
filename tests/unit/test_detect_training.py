"""End to end on synthetic images: a tiny detector trained from a store-like object overfits them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect.data import DetectionSet
from quickstudy.detect.evaluation import evaluate_detector
from quickstudy.detect.model import TINY, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.detect.versions import ModelFolder
from quickstudy.labels.records import LabelledBox, Sample

CLASSES = ["dent", "pit"]  # compact shapes: boxes converge in a few steps


class MemoryStore:
    """The part of :class:`quickstudy.labels.store.Store` that training reads."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples

    def classes(self) -> list[str]:
        return CLASSES

    def taxonomy_version(self) -> int:
        return 1

    def samples(self, split: str | None = None) -> list[Sample]:
        return [s for s in self._samples if split is None or s.split == split]


def synthetic_samples(folder: Path, n: int, drop_classes: bool = False) -> list[Sample]:
    line = SyntheticLine(seed=0, size=64, defect_types=tuple(CLASSES), max_per_image=1, p_second_type=0)
    samples = []
    for i in range(n):
        pixels, boxes, names = line.sample(i)
        path = folder / f"line_{i}.png"
        Image.fromarray(pixels).save(path)
        labelled = [
            LabelledBox(j, tuple(float(v) for v in box), frozenset() if drop_classes else frozenset({name}))
            for j, (box, name) in enumerate(zip(boxes, names, strict=True))
        ]
        samples.append(Sample(i, path, 64, 64, "train", labelled))  # type: ignore[arg-type]
    return samples


@pytest.mark.slow
def test_tiny_detector_overfits_four_synthetic_images(tmp_path: Path):
    torch.set_num_threads(1)
    samples = synthetic_samples(tmp_path, 4)
    config = DetectorConfig(**TINY, image_size=64)
    version = train_detector(
        MemoryStore(samples), tmp_path / "model", epochs=100, batch_size=4, lr=5e-3, config=config
    )
    assert version == 1 and ModelFolder(tmp_path / "model").current() == 1
    report = evaluate_detector(Predictor.from_dir(tmp_path / "model"), samples)
    assert report["mAP50"] > 0.9, report
    assert report["AR100_agnostic"] > 0.5, report
    assert all(r == 1.0 for r in report["image_recall"].values()), report
    data = DetectionSet.from_samples(samples, CLASSES, 64)
    assert data.valid.sum() == sum(len(s.boxes) for s in samples)
