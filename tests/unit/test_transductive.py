"""Transductive soft k-means prototypes and their scores."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quickstudy.meta.transductive import class_log_probabilities, refine_prototypes, shared_temperature


def _mixture(way: int, per_class: int, dim: int, sigma: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Isotropic Gaussian classes: ``(means, embeddings, labels)``."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(way, dim, generator=g)
    labels = torch.arange(way).repeat_interleave(per_class)
    embeddings = means[labels] + sigma * torch.randn(len(labels), dim, generator=g)
    return means, embeddings, labels


@settings(max_examples=25, deadline=None)
@given(
    way=st.integers(1, 6),
    dim=st.integers(1, 16),
    steps=st.integers(0, 5),
    temperature=st.none() | st.floats(0.01, 100.0),
    counts=st.integers(1, 10),
)
def test_no_queries_never_moves_a_prototype(
    way: int, dim: int, steps: int, temperature: float | None, counts: int
) -> None:
    prototypes = torch.randn(way, dim)
    refined = refine_prototypes(
        prototypes, torch.empty(0, dim), steps=steps, temperature=temperature, support_counts=counts
    )
    assert torch.equal(refined, prototypes)


def test_zero_steps_or_zero_query_weight_change_nothing() -> None:
    prototypes, queries = torch.randn(3, 4), torch.randn(10, 4)
    assert torch.equal(refine_prototypes(prototypes, queries, steps=0), prototypes)
    assert torch.equal(refine_prototypes(prototypes, queries, query_weight=0.0), prototypes)


def test_refined_one_shot_prototypes_are_closer_to_the_class_means() -> None:
    errors_before, errors_after = [], []
    for seed in range(10):
        means, queries, _ = _mixture(way=5, per_class=30, dim=8, sigma=1.0, seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        prototypes = means + torch.randn(means.shape, generator=g)  # one noisy support per class
        refined = refine_prototypes(prototypes, queries, steps=3)
        errors_before.append(float((prototypes - means).norm(dim=1).mean()))
        errors_after.append(float((refined - means).norm(dim=1).mean()))
    assert sum(errors_after) < 0.5 * sum(errors_before)


def test_more_supports_anchor_a_prototype_more_firmly() -> None:
    prototypes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    queries = torch.tensor([[2.0, 0.0], [2.0, 1.0], [12.0, 0.0]])
    one = refine_prototypes(prototypes, queries, temperature=4.0, support_counts=1)
    five = refine_prototypes(prototypes, queries, temperature=4.0, support_counts=torch.tensor([5, 5]))
    moved_one, moved_five = (one - prototypes).norm(dim=1), (five - prototypes).norm(dim=1)
    assert bool((moved_five < moved_one).all())
    assert bool((moved_five > 0).all())


def test_scores_do_not_depend_on_the_embedding_scale() -> None:
    means, queries, _ = _mixture(way=4, per_class=10, dim=6, sigma=1.0, seed=0)
    refined = refine_prototypes(means, queries, steps=2)
    scaled = refine_prototypes(50 * means, 50 * queries, steps=2)
    assert torch.allclose(scaled, 50 * refined, rtol=1e-4, atol=1e-3)
    assert torch.allclose(
        class_log_probabilities(50 * queries, 50 * refined),
        class_log_probabilities(queries, refined),
        atol=1e-4,
    )


def test_scores_are_calibrated_on_a_gaussian_mixture() -> None:
    # Classes overlap (sigma comparable to the gap between means): the confidence must match the accuracy.
    confidences, correct = [], []
    for seed in range(5):
        means, queries, labels = _mixture(way=5, per_class=200, dim=4, sigma=2.0, seed=seed)
        assert float(shared_temperature(queries, means)) == pytest.approx(2 * 2.0**2, rel=0.35)
        probabilities = class_log_probabilities(queries, means).exp()
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(queries)), atol=1e-5)
        top, predicted = probabilities.max(dim=1)
        confidences.append(top)
        correct.append((predicted == labels).float())
    mean_confidence, accuracy = float(torch.cat(confidences).mean()), float(torch.cat(correct).mean())
    assert 0.6 < accuracy < 0.97  # overlapping enough to be a real test
    assert mean_confidence == pytest.approx(accuracy, abs=0.06)
