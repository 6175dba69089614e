"""Few-shot additions to the detector that touch the network: the localizer and the recognition head
adapted on support boxes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.fewshot import (
    adapt_localizer,
    adapt_recognizer,
    add_classes,
    check_recognizer,
    pool_known,
    tune_recognizer,
)
from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
from quickstudy.errors import QuickstudyError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bright_squares(n: int, seed: int) -> DetectionSet:
    """``n`` 64-px images, each with one bright square on a dark noisy ground, boxed."""
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 64, 64, generator=generator) * 40).to(torch.uint8)
    boxes = torch.zeros(n, 1, 4)
    for i in range(n):
        x, y = (int(v) for v in torch.randint(4, 36, (2,), generator=generator))
        side = int(torch.randint(14, 24, (1,), generator=generator))
        images[i, 0, y : y + side, x : x + side] = 220
        boxes[i, 0] = torch.tensor([x, y, x + side, y + side], dtype=torch.float32)
    valid = torch.ones(n, 1, dtype=torch.bool)
    return DetectionSet(images, boxes, valid, torch.zeros(n, 1, 0, dtype=torch.bool), [], [""] * n)


def test_adapting_the_localizer_learns_the_support_boxes_and_leaves_embeddings_alone():
    torch.manual_seed(0)
    model = DefectDetector(["scratch"], DetectorConfig(**TINY, image_size=64)).eval()
    support, replay = bright_squares(4, seed=1), bright_squares(4, seed=2)
    images = support.images.float() / 255
    rois = torch.cat([torch.arange(4.0)[:, None], support.boxes[:, 0]], 1)
    with torch.no_grad():
        embeddings = model.recognize.embed(model.features(images), rois)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}

    # an untrained head's old scores are noise, so it is not held to them here (that is tested below)
    losses = adapt_localizer(
        model, support, replay, classes=["scratch"], steps=40, batch_size=8, lr=3e-3, distill=0.0
    )

    assert losses["loss_last"] < 0.7 * losses["loss_first"]
    assert model.learned_localize is not None and model.learned_classes == ["scratch"]
    learned = model.learned_localize.state_dict()
    assert any(not torch.equal(v, frozen[f"localize.{k}"]) for k, v in learned.items())
    for name, value in frozen.items():  # the base head too: the trained types keep their proposals
        assert torch.equal(value, model.state_dict()[name]), f"{name} moved"
    with torch.no_grad():
        assert torch.equal(model.recognize.embed(model.features(images), rois), embeddings)


def test_the_centre_share_reaches_the_support_boxes_and_not_the_replayed_ones(monkeypatch):
    model = DefectDetector(["scratch"], DetectorConfig(**TINY, image_size=64)).eval()
    compute, seen = model.add_learned_localize().compute_loss, []

    def spy(outputs, sizes, boxes, valid, center_share=None):
        seen.append(center_share)
        return compute(outputs, sizes, boxes, valid, center_share)

    monkeypatch.setattr(model.add_learned_localize(), "compute_loss", spy)
    support, replay = bright_squares(4, seed=1), bright_squares(4, seed=2)
    adapt_localizer(model, support, replay, classes=["scratch"], steps=2, batch_size=8, center_share=0.5)
    adapt_localizer(model, support, replay, classes=["scratch"], steps=1, batch_size=8, center_share=0.0)
    assert [share is None for share in seen] == [False, False, True]
    assert (seen[0][:4] == 0.5).all() and (seen[0][4:] == 0).all() and seen[0].shape == (8, 1)


def test_adapting_without_support_or_for_a_class_the_model_lacks_is_a_clear_error():
    model = DefectDetector(["scratch"], DetectorConfig(**TINY, image_size=64))
    with pytest.raises(QuickstudyError, match="support images"):
        adapt_localizer(model, bright_squares(0, seed=0), classes=["scratch"])
    with pytest.raises(QuickstudyError, match="classes"):
        adapt_localizer(model, bright_squares(2, seed=0), classes=["pit"])


def test_distillation_keeps_the_replayed_images_scores_closer_to_what_they_were():
    """Replayed images with nothing on them: learning the support squares moves the head's scores there
    too, less when it is held to its old ones."""
    support = bright_squares(4, seed=1)
    empty = bright_squares(4, seed=2)
    empty.images[:] = (torch.rand(empty.images.shape, generator=torch.Generator().manual_seed(3)) * 40).to(
        torch.uint8
    )
    empty.valid[:] = False

    def moved(distill: float) -> float:
        torch.manual_seed(0)
        model = DefectDetector(["scratch"], DetectorConfig(**TINY, image_size=64)).eval()
        with torch.no_grad():
            features = model.features(empty.images.float() / 255)
            before = model.localize(features)["logits"].sigmoid()
        adapt_localizer(
            model, support, empty, classes=["scratch"], steps=30, batch_size=8, lr=3e-3, distill=distill
        )
        assert model.learned_localize is not None
        with torch.no_grad():
            return float((model.learned_localize(features)["logits"].sigmoid() - before).abs().mean())

    assert moved(50.0) < 0.5 * moved(0.0)


def test_a_new_class_gets_its_own_unknown_cut_and_it_counts_only_where_its_support_is_spread_wider():
    model = DefectDetector(["pit"], DetectorConfig(**TINY))
    model.memory = model.memory.with_thresholds(unknown=0.9)
    dim = model.memory.prototypes.shape[1]
    tight = F.normalize(
        torch.eye(dim)[:1] + 0.01 * torch.randn(4, dim, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    spread = F.normalize(
        torch.eye(dim)[1:2] + 0.6 * torch.randn(4, dim, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    add_classes(model, {"tight": tight, "spread": spread, "single": spread[:1]})
    memory = model.memory
    cuts = memory.unknown_by_class
    assert set(cuts) == {"tight", "spread"} and cuts["spread"] < 0.9 < cuts["tight"]  # one box: no cut
    similarity = torch.full((1, len(memory)), 0.5)
    similarity[0, memory.index("spread")] = cuts["spread"] + 0.01  # a cut of its own that counts
    assert float(memory.nearest(similarity)[0]) > 0.9  # near enough: not unknown
    similarity[0, memory.index("spread")] = -1.0
    similarity[0, memory.index("tight")] = 0.89  # a cut above the common one: held to the common one
    assert float(memory.nearest(similarity)[0]) == pytest.approx(0.89)
    add_classes(model, {"spread": spread[:1]})  # learned again from one box: the old cut goes
    assert set(model.memory.unknown_by_class) == {"tight"}


# the classes allowed for 40 boxes of each of two known types (pool_known's form), as _resembling
# gives them
TWO_TYPES = F.one_hot(torch.cat([torch.zeros(40), torch.ones(40)]).long(), 2).bool()


def _pooled_clusters(centers: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` noisy copies of each center: what the recognition MLP reads of ``n`` boxes per type."""
    noise = torch.randn(len(centers), n, centers.shape[1], generator=torch.Generator().manual_seed(seed))
    return centers[:, None] + noise


def test_adapting_the_recognizer_separates_a_new_type_from_the_known_one_it_resembles():
    torch.manual_seed(0)
    model = DefectDetector(["inclusion", "patches"], DetectorConfig(**TINY, image_size=64)).eval()
    head = model.recognize
    generator = torch.Generator().manual_seed(1)
    inclusion, patches = torch.randn(2, head.mlp[1].in_features, generator=generator) * 0.5
    scratches = inclusion + 0.3 * torch.randn(inclusion.shape, generator=generator)  # near inclusion
    known = _pooled_clusters(torch.stack([inclusion, patches]), 40, seed=2)
    with torch.no_grad():
        model.memory = model.memory.replace("inclusion", head.project(known[0]).mean(0), None)
        model.memory = model.memory.replace("patches", head.project(known[1]).mean(0), None)
    support = _pooled_clusters(scratches[None], 5, seed=3)[0]
    unseen = _pooled_clusters(torch.stack([scratches, inclusion]), 100, seed=4)
    add_classes(model, {"scratches": head.project(support).detach()})
    untouched = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("recognize.mlp")}

    def named_right() -> list[float]:
        with torch.no_grad():
            nearest = [model.memory.similarity(head.project(boxes)).argmax(1) for boxes in unseen]
        return [
            float((n == model.memory.index(c)).float().mean())
            for n, c in zip(nearest, ["scratches", "inclusion"], strict=True)
        ]

    before = named_right()
    tuned = adapt_recognizer(model, {"scratches": support}, known.flatten(0, 1), TWO_TYPES)
    add_classes(model, tuned)
    after = named_right()

    assert after[0] > before[0] + 0.3, (before, after)  # the new type's unseen boxes now named as it
    assert after[1] >= before[1] - 0.05, (before, after)  # and the known type's no less
    for name, value in model.state_dict().items():
        if name in untouched:
            assert torch.equal(value, untouched[name]), f"{name} moved"


def test_distillation_holds_known_boxes_to_their_embeddings_while_the_recognizer_adapts():
    def drift(distill: float) -> float:
        torch.manual_seed(0)
        model = DefectDetector(["inclusion"], DetectorConfig(**TINY, image_size=64)).eval()
        head = model.recognize
        known = _pooled_clusters(torch.zeros(1, head.mlp[1].in_features), 40, seed=2)[0]
        with torch.no_grad():
            before = head.project(known)
        model.memory = model.memory.replace("inclusion", before.mean(0), None)
        support = _pooled_clusters(torch.full((1, known.shape[1]), 0.2), 5, seed=3)[0]
        add_classes(model, {"scratches": head.project(support).detach()})
        adapt_recognizer(
            model, {"scratches": support}, known, torch.ones(40, 1, dtype=torch.bool), distill=distill
        )
        with torch.no_grad():
            return float((head.project(known) - before).norm(dim=-1).mean())

    assert drift(10.0) < 0.5 * drift(0.0)


def test_adapting_the_recognizer_without_new_classes_is_a_clear_error():
    model = DefectDetector(["inclusion"], DetectorConfig(**TINY, image_size=64))
    with pytest.raises(QuickstudyError, match="new classes"):
        adapt_recognizer(model, {}, torch.zeros(0), torch.zeros(0, 1, dtype=torch.bool))


def _resembling(new_near_known: float) -> tuple[DefectDetector, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A model of inclusion and patches (prototypes the means of 40 pooled boxes each), a new type
    ``scratches`` added from 5 support boxes whose center lies ``new_near_known`` (noise scale) from
    inclusion's; returns the model, the support boxes ``[5, ...]``, 40 known boxes per type ``[2, 40,
    ...]`` and 40 more unseen ones (for checks)."""
    torch.manual_seed(0)
    model = DefectDetector(["inclusion", "patches"], DetectorConfig(**TINY, image_size=64)).eval()
    head = model.recognize
    generator = torch.Generator().manual_seed(1)
    inclusion, patches = torch.randn(2, head.mlp[1].in_features, generator=generator) * 0.5
    scratches = inclusion + new_near_known * torch.randn(inclusion.shape, generator=generator)
    known = _pooled_clusters(torch.stack([inclusion, patches]), 40, seed=2)
    with torch.no_grad():
        model.memory = model.memory.replace("inclusion", head.project(known[0]).mean(0), None)
        model.memory = model.memory.replace("patches", head.project(known[1]).mean(0), None)
    support = _pooled_clusters(scratches[None], 5, seed=3)[0]
    add_classes(model, {"scratches": head.project(support).detach()})
    checked = _pooled_clusters(torch.stack([inclusion, patches]), 40, seed=5)
    return model, support, known, checked


def test_held_out_support_images_tell_whether_tuning_the_recognizer_helps():
    model, support, known, _ = _resembling(0.3)
    head_before = {k: v.clone() for k, v in model.recognize.mlp.state_dict().items()}

    check = check_recognizer(model, {"scratches": list(support.split(1))}, known.flatten(0, 1), TWO_TYPES)

    assert check is not None and check.boxes == 5
    assert check.tuned > check.prototype + 0.3, check  # near inclusion: only tuning tells them apart
    assert -1.0 <= check.cuts["scratches"] <= 1.0
    assert all(torch.equal(v, model.recognize.mlp.state_dict()[k]) for k, v in head_before.items())
    # one support image: nothing to hold out
    assert check_recognizer(model, {"scratches": [support]}, known.flatten(0, 1), TWO_TYPES) is None


def _tune_by_itself(
    model: DefectDetector, support: torch.Tensor, known: torch.Tensor, checked: torch.Tensor
) -> str:
    """:func:`tune_recognizer` choosing, the support boxes one per image, known and checked boxes of
    two types (40 each)."""
    pairs = (known.flatten(0, 1), TWO_TYPES), (checked.flatten(0, 1), TWO_TYPES)
    return tune_recognizer(model, {"scratches": list(support.split(1))}, *pairs, choose=True)[0]


def test_tuning_the_recognizer_by_itself_moves_the_unknown_cuts_with_the_known_boxes():
    model, support, known, checked = _resembling(0.3)

    def nearness() -> torch.Tensor:  # the new type held to the common cut, as the known boxes were
        memory = model.memory.with_thresholds(unknown_by_class={})
        with torch.no_grad():
            return memory.nearest(memory.similarity(model.recognize.project(checked.flatten(0, 1))))

    def below() -> tuple[int, int]:
        nearest = nearness()
        return int((nearest < model.memory.unknown).sum()), int((nearest < model.memory.unknown_far).sum())

    # cuts that call a quarter and a tenth of the checked known boxes unknown
    cuts = nearness().quantile(torch.tensor([0.25, 0.1])).tolist()
    model.memory = model.memory.with_thresholds(unknown=cuts[0], unknown_far=cuts[1])
    called = below()
    note = _tune_by_itself(model, support, known, checked)

    assert note.startswith(" (recognition head adapted by itself: held-out support boxes named right"), note
    assert below() == called == (20, 8)  # the same share of the known boxes called unknown
    assert "scratches" in model.memory.unknown_by_class


def test_the_recognizer_is_left_as_it_was_where_the_prototype_already_names_the_new_type():
    model, support, known, checked = _resembling(3.0)  # far from both known types
    memory, head = model.memory, {k: v.clone() for k, v in model.recognize.mlp.state_dict().items()}

    note = _tune_by_itself(model, support, known, checked)

    assert note == " (recognition head left as it was: held-out support boxes named right 100% → 100% of 5)"
    assert model.memory is memory
    assert all(torch.equal(v, model.recognize.mlp.state_dict()[k]) for k, v in head.items())


def test_known_boxes_for_the_recognizer_keep_every_set_of_known_classes_but_not_the_new_class_alone(tmp_path):
    Image.fromarray(np.full((64, 64), 90, dtype=np.uint8)).save(tmp_path / "image.png")
    model = DefectDetector(["scratch", "inclusion", "pit"], DetectorConfig(**TINY, image_size=64)).eval()
    box = (8.0, 8.0, 30.0, 30.0)
    boxes = [
        SimpleNamespace(xyxy=box, allowed=allowed)
        for allowed in ({"pit"}, {"scratch", "inclusion"}, {"inclusion"}, set(), {"crack"})
    ]
    pooled, allowed = pool_known(
        model, [SimpleNamespace(path=tmp_path / "image.png", boxes=boxes)], "inclusion"
    )

    # pit, and a split box that is one of scratch and inclusion; not the new class alone, no unnamed
    # box, no box of a class the model does not know
    assert allowed.tolist() == [[False, False, True], [True, True, False]]
    assert pooled.shape[0] == 2
