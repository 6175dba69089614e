"""Gradient combiners on toy gradients whose combination is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quickstudy.multitask.combiners import MGDA, CAGrad, PCGrad, WeightedCombiner, get_combiner
from quickstudy.multitask.combiners.simplex import project_to_simplex
from quickstudy.multitask.gradients import task_gradients
from quickstudy.multitask.weighting import UncertaintyWeighting


def linear_losses(grads: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Losses ``g_t . x`` whose gradients on the shared vector ``x`` are the rows of ``grads``."""
    shared = torch.zeros(grads.shape[1], dtype=torch.float64, requires_grad=True)
    return [row.double() @ shared for row in grads], shared


def test_pcgrad_removes_the_conflicting_component_of_two_opposed_gradients_exactly() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0
    losses, shared = linear_losses(torch.stack([g1, g2]))
    PCGrad(n_tasks=2).backward(losses, [shared])
    g1_projected = g1 - (g1 @ g2) / (g2 @ g2) * g2  # (0.5, 0.5), orthogonal to g2
    g2_projected = g2 - (g2 @ g1) / (g1 @ g1) * g1  # (0, 1), orthogonal to g1
    assert float(g1_projected @ g2) == 0.0 and float(g2_projected @ g1) == 0.0
    assert shared.grad is not None
    assert shared.grad.tolist() == (g1_projected + g2_projected).tolist() == [0.5, 1.5]


def test_pcgrad_leaves_agreeing_gradients_alone_and_cancels_exact_opposites() -> None:
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert PCGrad(2).combine(agreeing).tolist() == [2.0, 1.0]
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    assert PCGrad(2).combine(opposite).tolist() == [0.0, 0.0]


def test_mgda_on_two_gradients_gives_the_min_norm_point_of_their_segment() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    combined = MGDA(2).combine(torch.stack([g1, g2]))
    # min over gamma of |gamma g1 + (1 - gamma) g2|^2 = gamma^2 + 4 (1 - gamma)^2  ->  gamma = 0.8
    assert combined.tolist() == pytest.approx([0.8, 0.4])
    assert float(combined @ (g1 - g2)) == pytest.approx(0.0, abs=1e-6)  # the foot of the perpendicular


def test_mgda_on_many_gradients_matches_a_brute_force_search_of_the_simplex() -> None:
    torch.manual_seed(0)
    grads = torch.randn(3, 5, dtype=torch.float64)
    weights = MGDA(3).task_weights(grads)
    assert weights.min() >= 0 and float(weights.sum()) == pytest.approx(1.0)
    a, b = torch.meshgrid(*[torch.linspace(0, 1, 401, dtype=torch.float64)] * 2, indexing="ij")
    grid = torch.stack([a, b, 1 - a - b], dim=-1).reshape(-1, 3)
    grid = grid[grid[:, 2] >= 0]
    best = float((grid @ grads).norm(dim=1).min())
    assert float((weights @ grads).norm()) <= best + 1e-9


def test_mgda_picks_the_gradient_that_lies_inside_the_hull_of_the_others() -> None:
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert MGDA(3).combine(grads).tolist() == pytest.approx([0.5, 0.5], abs=1e-5)


def test_cagrad_with_zero_radius_is_the_mean_gradient() -> None:
    grads = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert CAGrad(2, calpha=0.0).combine(grads).tolist() == pytest.approx([0.5, 1.0])


def test_cagrad_solves_its_dual_as_a_grid_search_does() -> None:
    torch.manual_seed(1)
    grads = torch.randn(2, 4, dtype=torch.float64)
    gram = grads @ grads.T
    mean = torch.full((2,), 0.5, dtype=torch.float64)
    radius = 0.5 * float(mean @ gram @ mean + 1e-8) ** 0.5

    def dual(w: torch.Tensor) -> float:
        return float(w @ gram @ mean) + radius * float(w @ gram @ w + 1e-8) ** 0.5

    grid = [torch.tensor([a, 1 - a], dtype=torch.float64) for a in torch.linspace(0, 1, 10001).tolist()]
    w_best = min(grid, key=dual)
    expected_w = mean + radius / float(w_best @ gram @ w_best + 1e-8) ** 0.5 * w_best
    expected = (expected_w / 1.25) @ grads
    assert CAGrad(2, calpha=0.5).combine(grads).tolist() == pytest.approx(expected.tolist(), abs=1e-3)


def test_combiner_gives_heads_their_plain_gradient_and_only_touches_shared_parameters() -> None:
    shared = torch.tensor([1.0, 1.0], requires_grad=True)
    heads = torch.tensor([2.0, 3.0], requires_grad=True)
    losses = [heads[0] * shared[0], -heads[1] * shared[0] + shared[1]]
    grads = task_gradients(losses, [shared])  # keeps the graph
    get_combiner("pcgrad", 2).backward(losses, [shared])
    assert heads.grad is not None and heads.grad.tolist() == [1.0, -1.0]
    assert shared.grad is not None
    assert shared.grad.tolist() == PCGrad(2).combine(grads).tolist()


def test_pcgrad_on_uncertainty_weighted_losses_projects_the_weighted_gradients() -> None:
    shared = torch.tensor([1.0, 1.0], requires_grad=True)
    heads = torch.tensor([2.0, 3.0], requires_grad=True)
    losses = [heads[0] * shared[0], -heads[1] * shared[0] + shared[1]]
    weighting = UncertaintyWeighting(2)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.0, 1.0]))
    scale = 0.5 * torch.exp(-weighting.log_variance.detach())  # [0.5, 0.18]
    grads = task_gradients(losses, [shared])
    weights = WeightedCombiner(weighting, PCGrad(2)).backward(losses, [shared])
    assert shared.grad is not None
    # PCGrad of the scaled gradients (the projection of g1 onto g2's normal does not depend on g2's scale)
    assert torch.allclose(shared.grad, PCGrad(2).combine(scale[:, None] * grads))
    assert torch.allclose(shared.grad, weights @ grads)
    assert heads.grad is not None and torch.allclose(heads.grad, scale * torch.tensor([1.0, -1.0]))
    # the log-variances learn from uncertainty's own objective: d/ds (e^-s / 2 * L + s / 2)
    values = torch.stack([loss.detach() for loss in losses])
    assert weighting.log_variance.grad is not None
    assert torch.allclose(weighting.log_variance.grad, 0.5 - scale * values)


def test_task_gradients_give_zeros_where_a_task_does_not_reach_a_parameter() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(1, requires_grad=True)
    grads = task_gradients([a.sum(), 3 * b.sum()], [a, b])
    assert grads.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]]


def test_simplex_projection_is_on_the_simplex_and_idempotent() -> None:
    projected = project_to_simplex(np.array([0.9, 0.8, -3.0]))
    assert projected == pytest.approx([0.55, 0.45, 0.0])
    assert project_to_simplex(projected) == pytest.approx(projected)


def test_unknown_combiner_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown combiner"):
        get_combiner("graddrop", 2)


class CountingIdentity(torch.autograd.Function):
    """Identity whose backward counts how often autograd runs through it."""

    calls = 0

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        CountingIdentity.calls += 1
        return grad


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "mgda"])
def test_combiner_runs_through_the_trunk_once_per_task_and_not_again_for_the_heads(name: str) -> None:
    torch.manual_seed(0)
    trunk = torch.nn.Linear(4, 8)
    heads = torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(3))
    features = CountingIdentity.apply(trunk(torch.randn(5, 4)))
    losses = [head(features).pow(2).mean() for head in heads]
    CountingIdentity.calls = 0
    get_combiner(name, 3).backward(losses, list(trunk.parameters()))
    assert CountingIdentity.calls == 3  # the T per-task gradients; the heads' backward is pruned
    assert all(p.grad is not None for head in heads for p in head.parameters())
