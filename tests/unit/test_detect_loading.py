"""DataLoader workers decode the training batches ahead: the same batches, in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect.data import DetectionSet
from quickstudy.detect.loading import StepIndices, StepLoader
from quickstudy.detect.model import TINY, DetectorConfig
from quickstudy.detect.training import train_detector
from quickstudy.detect.versions import ModelFolder
from quickstudy.labels import Store
from quickstudy.train import step_generator
from tests.unit.test_detect_training import MemoryStore, synthetic_samples

BATCH, PER_EPOCH, STEPS = 3, 2, 5  # steps 1..4: the end of epoch 0, epoch 1, the start of epoch 2
Batches = list[tuple[torch.Tensor, dict[str, torch.Tensor]]]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    """Six small colour frames of the synthetic line, cut into 48-px tiles (9 views per frame)."""
    folder = tmp_path_factory.mktemp("line")
    line = SyntheticLine(seed=1, size=48, frame=(96, 80), colour=True, max_per_image=2)
    with Store.open(folder / "s.qs") as store:
        store.import_images(line.imported_images(folder, range(6)), source="synthetic")
        samples, classes = store.samples("train"), store.classes()
    return DetectionSet.from_samples(samples, classes, 48, channels=3, tiling=True)


def _batches(data: DetectionSet, loader: StepLoader) -> Batches:
    """The training loop's batches: the loader's views, augmented with each step's generator."""
    out = []
    for step in range(1, STEPS):
        indices, views = loader.get(step)
        out.append(data.batch(indices, step_generator(7, step), "dihedral", photometric=True, decoded=views))
    loader.close()
    return out


def _assert_same(a: Batches, b: Batches) -> None:
    assert len(a) == len(b) == STEPS - 1
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
        assert torch.equal(images_a, images_b)
        assert targets_a.keys() == targets_b.keys()
        assert all(torch.equal(targets_a[k], targets_b[k]) for k in targets_a)


def test_without_workers_the_batches_are_those_decoded_in_the_training_process(tiles: DetectionSet) -> None:
    indices = StepIndices(len(tiles), PER_EPOCH, BATCH, seed=7)
    # as the training loop drew them before the loader: the epoch's shuffle, this step's slice
    direct = []
    for step in range(1, STEPS):
        epoch, i = divmod(step, PER_EPOCH)
        order = torch.randperm(len(tiles), generator=step_generator(7, epoch))
        chosen = order[i * BATCH : (i + 1) * BATCH]
        direct.append(tiles.batch(chosen, step_generator(7, step), "dihedral", photometric=True))
    _assert_same(_batches(tiles, StepLoader(tiles.images, indices, 1, STEPS)), direct)


def test_two_workers_give_the_batches_of_none_and_decode_in_their_own_processes(tiles: DetectionSet) -> None:
    none = _batches(tiles, StepLoader(tiles.images, StepIndices(len(tiles), PER_EPOCH, BATCH, 7), 1, STEPS))
    decodes = tiles.images.decodes
    two = _batches(tiles, StepLoader(tiles.images, StepIndices(len(tiles), PER_EPOCH, BATCH, 7), 1, STEPS, 2))
    _assert_same(two, none)
    assert tiles.images.decodes == decodes  # nothing decoded in the training process


def test_steps_are_asked_for_in_order_and_workers_share_one_cache_budget(tiles: DetectionSet) -> None:
    loader = StepLoader(tiles.images, StepIndices(len(tiles), PER_EPOCH, BATCH, 7), 0, STEPS, workers=2)
    with pytest.raises(RuntimeError, match="step 1 asked of a loader at step 0"):
        loader.get(1)
    worker_cache = loader._loader.dataset.images  # type: ignore[attr-defined]
    assert worker_cache is not tiles.images
    assert worker_cache.capacity == tiles.images.capacity // 2
    loader.close()


def test_training_with_workers_gives_the_model_of_training_without(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    samples = synthetic_samples(tmp_path, 4)
    options = {"epochs": 2, "batch_size": 2, "config": DetectorConfig(**TINY, image_size=64)}
    for workers in (0, 2):
        train_detector(MemoryStore(samples), tmp_path / f"w{workers}", workers=workers, **options)
    none, two = (ModelFolder(tmp_path / f"w{w}").load(1) for w in (0, 2))
    assert all(torch.equal(none["model"][k], two["model"][k]) for k in none["model"])
    assert "workers" not in json.dumps(two["train"])  # how a run is computed, not the model's


def test_quickstudy_train_hands_its_workers_to_the_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quickstudy.cli import main
    from quickstudy.detect import training

    given: dict[str, object] = {}
    monkeypatch.setattr(training, "train_detector", lambda store, out, **kw: given.update(kw) or 1)
    Store.open(tmp_path / "s.qs").close()
    assert (
        main(["train", "--store", str(tmp_path / "s.qs"), "--out", str(tmp_path / "m"), "--workers", "2"])
        == 0
    )
    assert given["workers"] == 2


def test_tiles_with_a_box_alternate_with_background_tiles_in_each_epoch() -> None:
    holds_box = torch.tensor([True, False, False, False, True, False, False, False, False, False])
    indices = StepIndices(10, 5, 2, seed=0, holds_box=holds_box)
    epoch = torch.cat([indices(step) for step in range(5)])
    assert sorted(epoch.tolist()) == list(range(10))  # every view once
    assert holds_box[epoch[:4]].tolist() == [True, False, True, False]
    assert not holds_box[epoch[4:]].any()
    assert not torch.equal(epoch, torch.cat([indices(step) for step in range(5, 10)]))  # reshuffled
    # without the mask, the plain shuffle of before
    plain = StepIndices(10, 5, 2, seed=0)
    assert torch.equal(plain(0), torch.randperm(10, generator=step_generator(0, 0))[:2])
