"""MAML's inner loop: exact second-order and first-order meta-gradients, flat memory over many steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.episodes import Episode
from quickstudy.meta import ANIL, FOMAML, MAML


class LinearBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.out_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x.flatten(1)))


def tiny_episode(seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_x=torch.randn(4, 1, 2, 2, generator=g),
        support_y=torch.tensor([0, 0, 1, 1]),
        query_x=torch.randn(6, 1, 2, 2, generator=g),
        query_y=torch.tensor([0, 1, 0, 1, 0, 1]),
        classes=torch.tensor([0, 1]),
        support_index=torch.arange(4),
        query_index=torch.arange(6),
    )


def reference_meta_gradient(learner: MAML, episode: Episode, *, first_order: bool) -> list[torch.Tensor]:
    """The meta-gradient written out by hand with torch.func.grad, for two inner steps."""
    names = [name for name, _ in learner.named_parameters()]
    theta = tuple(p.detach() for _, p in learner.named_parameters())

    def loss(params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(learner, dict(zip(names, params, strict=True)), (x,))
        return F.cross_entropy(logits, y)

    def adapted(params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        for _ in range(2):
            grads = torch.func.grad(loss)(params, episode.support_x, episode.support_y)
            if first_order:
                grads = tuple(g.detach() for g in grads)
            params = tuple(p - learner.inner_lr * g for p, g in zip(params, grads, strict=True))
        return params

    if first_order:  # gradient of the query loss at the adapted weights, taken as the update
        return list(torch.func.grad(loss)(adapted(theta), episode.query_x, episode.query_y))
    return list(torch.func.grad(lambda p: loss(adapted(p), episode.query_x, episode.query_y))(theta))


@pytest.mark.parametrize("cls", [MAML, FOMAML])
def test_meta_gradient_matches_the_hand_written_one(cls: type[MAML]) -> None:
    torch.manual_seed(0)
    learner = cls(LinearBackbone(), way=2, inner_lr=0.5, inner_steps=2)
    episode = tiny_episode()
    learner.meta_loss(episode)[0].backward()
    ours = [p.grad for p in learner.parameters()]
    expected = reference_meta_gradient(learner, episode, first_order=cls is FOMAML)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_second_order_differs_from_first_order() -> None:
    torch.manual_seed(0)
    maml = MAML(LinearBackbone(), way=2, inner_lr=0.5, inner_steps=2)
    fomaml = FOMAML(LinearBackbone(), way=2, inner_lr=0.5, inner_steps=2)
    fomaml.load_state_dict(maml.state_dict())
    for learner in (maml, fomaml):
        learner.meta_loss(tiny_episode())[0].backward()
    assert not torch.allclose(maml.backbone.linear.weight.grad, fomaml.backbone.linear.weight.grad)


def test_anil_adapts_only_the_head_and_fit_leaves_weights_alone() -> None:
    torch.manual_seed(0)
    learner = ANIL(LinearBackbone(), way=2, inner_lr=0.5, inner_steps=1)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    episode = tiny_episode()
    scores = learner.fit(episode.support_x, episode.support_y)(episode.query_x)
    assert scores.shape == (6, 2)
    for key, value in learner.state_dict().items():
        assert torch.equal(value, before[key])
    learner.meta_loss(episode)[0].backward()
    assert (
        learner.backbone.linear.weight.grad is not None
    )  # the backbone learns through the head's inner loop


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


class TinyBatchNormBackbone(nn.Sequential):
    """Conv, batch norm on the batch at hand (as MAML uses it), ReLU, pooling: every op MAML's graph has."""

    out_features = 4

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4, track_running_stats=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_maml_memory_stays_flat_over_thousands_of_meta_iterations() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        # A tiny backbone keeps 2000 second-order meta-iterations to a few seconds.
        learner = MAML(TinyBatchNormBackbone(), way=5)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        sizes = []
        for step in range(2000):
            episode = Episode(
                torch.rand(5, 1, 8, 8, generator=g),
                torch.arange(5),
                torch.rand(10, 1, 8, 8, generator=g),
                torch.arange(5).repeat(2),
                torch.arange(5),
                torch.arange(5),
                torch.arange(10),
            )
            optimizer.zero_grad()
            learner.meta_loss(episode)[0].backward()
            optimizer.step()
            if step in (200, 1999):
                sizes.append(rss_bytes())
    finally:
        torch.set_num_threads(threads)
    # A graph or tensor kept per meta-iteration (over 1 KiB each here) would grow memory by more than 2 MiB.
    assert sizes[1] - sizes[0] < 2 * 2**20, f"resident memory grew {(sizes[1] - sizes[0]) / 2**20:.1f} MiB"
