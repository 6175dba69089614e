"""Every learner learns a tiny synthetic few-shot problem, on held-out classes, far above chance."""

from __future__ import annotations

import pytest
import torch

from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.meta import ALGORITHMS, FewShotConfig, build_learner, evaluate
from quickstudy.train import step_generator


def synthetic_classes(classes: int, per_class: int, seed: int, size: int = 16) -> ImageClassSet:
    """Each class is a random sparse dot pattern; its images are the pattern jittered by a pixel, plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(classes, size, size, generator=g) < 0.15).float()
    labels = torch.arange(classes).repeat_interleave(per_class)
    shifts = torch.randint(-1, 2, (len(labels), 2), generator=g).tolist()
    images = torch.stack(
        [torch.roll(patterns[c], tuple(s), dims=(0, 1)) for c, s in zip(labels, shifts, strict=True)]
    )
    images = (0.7 * images + 0.3 * torch.rand(images.shape, generator=g)) * 255
    return ImageClassSet(
        images.to(torch.uint8), labels, [f"c{i}" for i in range(classes)], f"synthetic-{seed}"
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAIN = synthetic_classes(64, 10, seed=0)
TEST = synthetic_classes(20, 10, seed=1)  # novel classes: never seen in meta-training
RECIPES = {  # (steps, meta-batch, Adam lr, learner options): small enough for seconds on one core
    "protonet": (60, 1, 3e-3, {}),
    "maml": (40, 2, 3e-3, {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}),
    "fomaml": (60, 2, 3e-3, {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}),
    "anil": (60, 2, 3e-3, {"inner_lr": 0.1, "inner_steps": 5, "eval_inner_steps": 5}),
    "mann": (120, 1, 3e-3, {}),
    "finetune": (60, 1, 1e-2, {"head_steps": 10}),
}


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_learner_learns_novel_classes_far_above_chance(algo: str) -> None:
    torch.manual_seed(0)
    steps, meta_batch, lr, learner_kw = RECIPES[algo]
    train_way = 20 if algo == "finetune" else 5
    config = FewShotConfig(
        algo=algo,
        backbone_kw={"width": 16},
        image_size=16,
        train_way=train_way,
        shot=1,
        query=5,
        meta_batch=meta_batch,
        learner_kw=learner_kw,
        num_classes=len(TRAIN.classes),
    )
    learner = build_learner(config)
    test_sampler = EpisodeSampler(TEST, way=5, shot=1, query=5)
    before = evaluate(learner, test_sampler, episodes=30).accuracy
    train_sampler = EpisodeSampler(TRAIN, way=train_way, shot=1, query=5)
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    learner.train()
    for step in range(steps):
        episodes = [train_sampler.sample(step_generator(0, step, task)) for task in range(meta_batch)]
        loss = torch.stack([learner.meta_loss(episode)[0] for episode in episodes]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate(learner, test_sampler, episodes=30).accuracy
    print(f"{algo}: 5-way 1-shot accuracy {before:.2f} -> {after:.2f}")
    assert after > 0.5 and after > before + 0.15  # chance is 0.2


@pytest.mark.parametrize("algo", ["protonet", "finetune"])
def test_scoring_embeddings_computed_once_gives_the_same_report(algo: str) -> None:
    torch.manual_seed(0)
    config = FewShotConfig(
        algo=algo,
        backbone_kw={"width": 8},
        num_classes=64,
        learner_kw={"head_steps": 3} if algo == "finetune" else {},
    )
    learner = build_learner(config)
    sampler = EpisodeSampler(TRAIN, way=5, shot=2, query=3, query_set=TRAIN)
    once = evaluate(learner, sampler, episodes=5, embed_once=True)
    each = evaluate(learner, sampler, episodes=5, embed_once=False)
    assert once.accuracy == pytest.approx(each.accuracy) and once.per_class == each.per_class


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_learner_trains_and_adapts_on_a_resnet12(algo: str) -> None:
    torch.manual_seed(0)
    config = FewShotConfig(
        algo=algo,
        backbone="resnet12",
        backbone_kw={"widths": (4, 4, 4, 4)},
        train_way=5,
        num_classes=len(TRAIN.classes),
        learner_kw={"head_steps": 2} if algo == "finetune" else {},
    )
    learner = build_learner(config)
    episode = EpisodeSampler(TRAIN, way=5, shot=1, query=2).sample(step_generator(0, 0))
    loss, logits = learner.train().meta_loss(episode)
    loss.backward()
    assert logits.shape == (10, 5) and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.backbone.parameters())
    predictor = learner.eval().fit(episode.support_x, episode.support_y)
    assert predictor(episode.query_x).shape == (10, 5)
