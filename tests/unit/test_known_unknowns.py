"""Boxes of a type retired as unnamed reach calibration: they set the score an ``unknown`` detection
needs and choose how the known boxes' 5% budget of ``unknown`` is split; without them the score is
the least demanding class's (or the clean-surface budget's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.labels.formats.voc import read_voc
from quickstudy.labels.store import Store


def trained(folder: Path, retire: str | None) -> tuple[DefectDetector, int]:
    line = SyntheticLine(seed=0, size=64, defect_types=("dent", "pit", "stain"), max_per_image=2)
    line.write_voc(folder / "voc", 24)
    images = read_voc(folder / "voc")
    for image in images:
        image.split = "train"
    with Store.open(folder / "labels.qs") as store:
        store.import_images(images, source="synthetic")
        if retire:
            store.taxonomy.retire(retire, "unnamed")
        flagged = sum(b.unnamed for s in store.samples("train") for b in s.boxes)
        config = DetectorConfig(**TINY, image_size=64)
        train_detector(store, folder / "model", epochs=2, batch_size=8, config=config, hold_out=False)
    return Predictor.from_dir(folder / "model").model, flagged


@pytest.mark.usefixtures("one_torch_thread")
def test_known_unknowns_calibrate_unknown_and_without_them_the_classes_thresholds_do(tmp_path: Path) -> None:
    model, flagged = trained(tmp_path / "retired", "stain")
    assert flagged > 0 and model.classes == ["dent", "pit"] and model.normality is not None
    memory = model.memory
    assert memory.unknown_operating is not None  # calibrated on the images holding retired boxes
    assert memory.unknown_score == memory.unknown_operating
    plain, _ = trained(tmp_path / "plain", None)
    least = min(plain.memory.operating.values())
    # without them: the least demanding class's score, or higher where that let too many unknown
    # detections onto clean surface (this 2-epoch model makes many)
    assert plain.memory.unknown_operating is None or plain.memory.unknown_operating > least
