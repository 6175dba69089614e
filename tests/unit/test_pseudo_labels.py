"""Pseudo-labels respect what a label rules out: a box of a type no class names and a box the open-set
test calls unknown are never named, and a split's old box is never named outside its set."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
from quickstudy.detect.recognition import open_set_cut, partial_label_loss, pseudo_labels

from .labels_fixtures import small_store

NONE = [False, False]


def test_a_box_of_an_unnamed_type_is_never_pseudo_labelled() -> None:
    logits = torch.tensor([[9.0, 0.0], [9.0, 0.0], [0.0, 9.0]])
    allowed = torch.tensor([NONE, NONE, [False, True]])
    unnamed = torch.tensor([False, True, False])
    # the same confident box is named without the flag and left alone with it
    assert pseudo_labels(logits, allowed, 0.95).tolist() == [[True, False], [True, False], [False, True]]
    assert pseudo_labels(logits, allowed, 0.95, unnamed).tolist() == [[True, False], NONE, [False, True]]


def test_a_box_the_open_set_test_calls_unknown_is_never_pseudo_labelled() -> None:
    # labelled boxes reach logit 9 for their own class; the third box is sure of a (softmax ~1) but
    # much farther from it than labelled boxes are from theirs: a type not yet named
    logits = torch.tensor([[9.0, 0.0], [0.0, 9.5], [3.0, -9.0], [9.2, 0.0]])
    allowed = torch.tensor([[True, False], [False, True], NONE, NONE])
    assert logits.softmax(-1)[2, 0] > 0.99
    assert pseudo_labels(logits, allowed, 0.95).tolist() == [
        [True, False],
        [False, True],
        NONE,
        [True, False],
    ]


def test_a_split_box_is_never_named_outside_its_set_and_learns_away_from_it() -> None:
    logits = torch.tensor([[9.0, 0.0, 0.0]], requires_grad=True)  # sure of class 0, outside its set
    allowed = torch.tensor([[False, True, True]])
    assert torch.equal(pseudo_labels(logits, allowed, 0.5), allowed)
    partial_label_loss(logits, allowed).backward()
    assert logits.grad is not None and logits.grad[0, 0] > 0  # descent lowers the outside class


def test_the_unnamed_flag_reaches_the_targets_in_the_rois_order(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    store.taxonomy.split("a", ["a1", "a2"])
    store.taxonomy.retire("c")
    samples = store.samples()
    classes = store.classes()
    data = DetectionSet.from_samples(samples, classes, 64)
    flagged = [b.unnamed for s in samples for b in s.boxes]
    assert any(flagged) and not all(flagged)
    assert data.unnamed[data.valid].tolist() == flagged
    split_box = next(
        i for i, b in enumerate(b for s in samples for b in s.boxes) if b.allowed == {"a1", "a2"}
    )
    assert data.allowed[data.valid][split_box].tolist() == [c in ("a1", "a2") for c in classes]
    _, targets = data.batch(torch.arange(len(data)), torch.Generator().manual_seed(0), augment=None, jitter=2)
    assert targets["roi_unnamed"].tolist() == flagged * 3
    assert not (targets["roi_unnamed"] & targets["roi_allowed"].any(-1)).any()


def test_a_box_of_a_type_left_out_of_training_is_unnamed_to_it_never_a_box_without_class(
    tmp_path: Path,
) -> None:
    store = small_store(tmp_path)
    store.taxonomy.split("a", ["a1", "a2"])
    samples = store.samples()
    boxes = [b for s in samples for b in s.boxes]
    data = DetectionSet.from_samples(samples, ["a1", "b"], 64)  # c and a2 are not trained
    allowed, unnamed = data.allowed[data.valid], data.unnamed[data.valid]
    for box, names, flag in zip(boxes, allowed.tolist(), unnamed.tolist(), strict=True):
        if box.allowed == {"c"}:  # known to be none of a1, b: an example of what must come out unknown
            assert (names, flag) == ([False, False], True)
        elif box.allowed == {"a1", "a2"}:  # a1 or a type not trained: nothing known for sure
            assert (names, flag) == ([False, False], False)
        elif box.allowed == {"b"}:
            assert (names, flag) == ([False, True], False)
        else:
            assert box.allowed == frozenset() and (names, flag) == ([False, False], False)
    assert {b.allowed for b in boxes} == {
        frozenset(),
        frozenset({"c"}),
        frozenset({"a1", "a2"}),
        frozenset({"b"}),
    }
    # read class-agnostically (no classes), every box is a box and nothing more
    agnostic = DetectionSet.from_samples(samples, [], 64)
    assert not agnostic.unnamed.any() and agnostic.allowed.numel() == 0


def test_the_model_never_teaches_an_unnamed_box_a_class() -> None:
    torch.manual_seed(0)
    # any box without class is pseudo-labelled at this confidence, unless flagged
    model = DefectDetector(["a", "b"], DetectorConfig(**TINY, image_size=64, pseudo_label_confidence=1e-6))
    boxes = torch.tensor([[[4.0, 4, 30, 30], [20, 20, 60, 50]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    targets = {
        "boxes": boxes,
        "valid": valid,
        "rois": torch.cat([torch.zeros(2, 1), boxes[valid]], 1),
        "roi_allowed": torch.zeros(2, 2, dtype=torch.bool),
        "roi_support": torch.zeros(2, dtype=torch.bool),
    }
    images = torch.rand(1, 1, 64, 64)
    assert model(images, targets)["loss_classes"].item() > 0
    flagged = model(images, {**targets, "roi_unnamed": torch.ones(2, dtype=torch.bool)})
    assert flagged["loss_classes"].item() == 0.0
    one = model(images, {**targets, "roi_unnamed": torch.tensor([True, False])})["loss_classes"]
    logits = model.recognize.logits(
        model.recognize.embed(model.features(images), targets["rois"][1:]), model.class_vectors
    )
    assert torch.allclose(one, F.cross_entropy(logits, logits.argmax(-1)))


def test_an_unnamed_box_is_taught_to_be_far_from_every_class() -> None:
    # Three boxes of classes a and b and one of a type no class names, on fixed images: a few steps
    # of the recognition loss with the flag end with the unnamed box below the open-set cut of the
    # labelled boxes; the same steps without the flag leave it nearer to some class.
    def train(flag: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        model = DefectDetector(["a", "b"], DetectorConfig(**TINY, image_size=64))
        generator = torch.Generator().manual_seed(1)
        images = torch.rand(2, 1, 64, 64, generator=generator)
        images[1, :, 30:50, 30:50] = 1.0
        rois = torch.tensor(
            [[0, 4.0, 4, 30, 30], [0, 34, 34, 60, 60], [1, 2, 2, 26, 26], [1, 28, 28, 52, 52]]
        )
        allowed = torch.tensor([[True, False], [False, True], [True, False], NONE])
        unnamed = torch.tensor([False, False, False, flag])
        with torch.no_grad():  # only the recognition head learns here
            features = model.features(images)
        optimizer = torch.optim.SGD(model.recognize.parameters(), lr=0.05)
        for _ in range(60):
            parts = model.recognize.compute_loss(
                model.recognize.embed(features, rois),
                allowed,
                model.class_vectors,
                torch.zeros(4, dtype=torch.bool),
                unnamed=unnamed,
            )
            assert (parts["loss_unnamed"].item() > 0) == flag
            optimizer.zero_grad()
            (parts["loss_classes"] + parts["loss_unnamed"]).backward()
            optimizer.step()
        with torch.no_grad():
            logits = model.recognize.logits(model.recognize.embed(features, rois), model.class_vectors)
        return float(logits[3].amax()), open_set_cut(logits[:3], allowed[:3])

    nearest, cut = train(flag=True)
    assert nearest < cut
    nearest_unflagged, _ = train(flag=False)
    assert nearest < nearest_unflagged - 1.0
