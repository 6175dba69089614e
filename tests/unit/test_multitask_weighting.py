"""Each loss weighting on a two-task toy whose right answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from quickstudy.multitask.weighting import (
    DynamicWeightAverage,
    GradNorm,
    get_weighting,
)


def test_equal_and_fixed_weights_scale_each_task_gradient() -> None:
    w = torch.zeros(2, requires_grad=True)
    losses = [3.0 * w[0], 5.0 * w[1]]
    used = get_weighting("fixed", 2, weights=[2.0, 0.5]).backward(losses, [w])
    assert used.tolist() == [2.0, 0.5]
    assert w.grad is not None and w.grad.tolist() == [6.0, 2.5]

    v = torch.zeros(2, requires_grad=True)
    get_weighting("equal", 2).backward([3.0 * v[0], 5.0 * v[1]], [v])
    assert v.grad is not None and v.grad.tolist() == [3.0, 5.0]


def test_unknown_weighting_and_wrong_loss_count_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown weighting"):
        get_weighting("nope", 2)
    with pytest.raises(ValueError, match="expects 2 losses"):
        get_weighting("equal", 2).backward([torch.ones((), requires_grad=True)], [])


def test_uncertainty_down_weights_a_task_whose_labels_are_pure_noise() -> None:
    torch.manual_seed(0)
    trunk = nn.Linear(4, 16)
    heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 1)])
    weighting = get_weighting("uncertainty", 2)
    params = [*trunk.parameters(), *heads.parameters(), *weighting.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.02)
    truth = torch.randn(4, 1)
    for _ in range(400):
        x = torch.randn(64, 4)
        targets = [x @ truth, torch.randn(64, 1) * 2.0]  # task 1: labels independent of x
        features = torch.relu(trunk(x))
        losses = [nn.functional.mse_loss(head(features), y) for head, y in zip(heads, targets, strict=True)]
        optimizer.zero_grad()
        used = weighting.backward(losses, list(trunk.parameters()))
        optimizer.step()
    # At the optimum the weight is 1 / (2 * loss): the noise task's loss stays ~4.
    assert used[1] < 0.2
    assert used[0] > 5 * used[1]


def test_gradnorm_equalises_weighted_gradient_norms_when_rates_are_equal() -> None:
    # Task gradients on the shared vector have norms 1 and 10; rates stay equal (losses constant
    # in ratio), so the fixed point is w0 * 1 = w1 * 10 with w0 + w1 = 2.
    weighting = GradNorm(n_tasks=2, alpha=1.5)
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.05)
    for _ in range(600):
        shared = torch.ones(2, requires_grad=True)
        losses = [shared[0] * 1.0, shared[1] * 10.0]
        optimizer.zero_grad()
        used = weighting.backward(losses, [shared])
        optimizer.step()
        # The shared gradient is the weighted sum of task gradients.
        assert torch.allclose(shared.grad, torch.stack([used[0] * 1.0, used[1] * 10.0]))  # type: ignore[arg-type]
    assert used.tolist() == pytest.approx([20 / 11, 2 / 11], abs=0.05)


def test_gradnorm_gives_more_weight_to_the_task_that_trains_slower() -> None:
    weighting = GradNorm(n_tasks=2, alpha=1.5)
    shared = torch.ones(2, requires_grad=True)
    weighting.backward([shared[0] * 1.0, shared[1] * 1.0], [shared])  # records initial losses 1, 1
    weighting.logits.grad = None
    shared = torch.ones(2, requires_grad=True)
    # Equal gradient norms; task 0's loss is still at 90% of its start, task 1's fell to 10%.
    weighting.backward([shared[0] * 1.0 - 0.1, shared[1] * 1.0 - 0.9], [shared])
    assert weighting.logits.grad is not None
    assert weighting.logits.grad[0] < 0 < weighting.logits.grad[1]  # SGD raises w0, lowers w1


def test_gradnorm_heads_get_their_plain_weighted_gradient() -> None:
    shared = torch.ones(3, requires_grad=True)
    head = torch.full((2,), 2.0, requires_grad=True)
    losses = [head[0] * shared.sum(), head[1] * shared.sum()]
    used = GradNorm(n_tasks=2).backward(losses, [shared])
    assert head.grad is not None
    assert head.grad.tolist() == pytest.approx((used * 3.0).tolist())
    assert shared.grad is not None
    assert shared.grad.tolist() == pytest.approx([float(used.sum() * 2.0)] * 3)


def test_dwa_weights_the_task_whose_loss_falls_slower() -> None:
    weighting = DynamicWeightAverage(n_tasks=2, temperature=2.0, window=1)
    history = [(1.0, 1.0), (0.9, 0.5), (0.81, 0.25)]
    used = []
    for values in history:
        shared = torch.ones((), requires_grad=True)
        used.append(weighting.backward([shared * values[0], shared * values[1]], [shared]).tolist())
    assert used[0] == used[1] == [1.0, 1.0]  # the first two windows have no rate yet
    assert used[2] == pytest.approx((2 * torch.softmax(torch.tensor([0.9, 0.5]) / 2.0, dim=0)).tolist())
    expected = 2 * torch.softmax(torch.tensor([0.81 / 0.9, 0.25 / 0.5]) / 2.0, dim=0)
    assert weighting.current_weights().tolist() == pytest.approx(expected.tolist())
    assert expected[0] > expected[1]
    assert math.isclose(float(weighting.current_weights().sum()), 2.0, rel_tol=1e-6)


def test_weighting_state_survives_a_state_dict_round_trip() -> None:
    weighting = DynamicWeightAverage(n_tasks=2, window=1)
    for values in [(1.0, 1.0), (0.5, 0.9)]:
        shared = torch.ones((), requires_grad=True)
        weighting.backward([shared * values[0], shared * values[1]], [shared])
    restored = DynamicWeightAverage(n_tasks=2, window=1)
    restored.load_state_dict(weighting.state_dict())
    assert torch.equal(restored.window_means, weighting.window_means)
