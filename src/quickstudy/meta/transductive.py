"""Transductive prototypes: refine class means with the unlabelled queries of an episode (soft k-means).

Ren et al. (2018, "Meta-learning for semi-supervised few-shot classification") let each
unlabelled embedding join every prototype with the weight of its soft assignment. Here the
refinement is EM for a mixture of isotropic Gaussians with one shared variance: the E-step
assigns queries with ``softmax(-d / temperature)`` (``d`` the squared Euclidean distance of
ProtoNet), the M-step moves each prototype to the weighted mean of its supports and the queries
assigned to it. With ``temperature=None`` the temperature is the mixture's own estimate
(``2 sigma^2`` from the assignments), so the scores are the mixture's class posteriors and do
not depend on the embedding's scale; a fixed number overrides it.

Without queries nothing moves: the prototypes come back unchanged.
"""

from __future__ import annotations

import torch

from quickstudy.meta.base import squared_distances


def shared_temperature(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``2 sigma^2``: twice the per-dimension variance of the embeddings around their nearest prototype.

    For a mixture of isotropic Gaussians of variance ``sigma^2``, the class posterior is
    ``softmax(-d / (2 sigma^2))``; this estimates that temperature from the embeddings themselves.
    """
    nearest = squared_distances(embeddings, prototypes).min(dim=1).values
    return (2 * nearest.mean() / embeddings.shape[1]).clamp_min(torch.finfo(embeddings.dtype).tiny)


def class_log_probabilities(
    embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float | torch.Tensor | None = None
) -> torch.Tensor:
    """``[Q, N]`` log class posteriors ``log softmax(-d / temperature)``; ``None``: :func:`shared_temperature`."""
    if temperature is None:
        temperature = shared_temperature(embeddings, prototypes)
    return torch.log_softmax(-squared_distances(embeddings, prototypes) / temperature, dim=1)


def refine_prototypes(
    prototypes: torch.Tensor,
    query_embeddings: torch.Tensor,
    *,
    steps: int = 1,
    temperature: float | None = None,
    support_counts: int | torch.Tensor = 1,
    query_weight: float = 1.0,
) -> torch.Tensor:
    """Prototypes ``[N, D]`` moved towards the queries ``[Q, D]`` softly assigned to them, ``steps`` times.

    ``prototypes`` are support means and ``support_counts`` (an int, or ``[N]``) the number of
    supports behind each, so a K-shot prototype keeps K times the weight of one fully assigned
    query; ``query_weight`` scales every query's weight (0 turns refinement off).

    Example:
        >>> prototypes = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
        >>> queries = torch.tensor([[1.0, 0.0], [1.0, 0.2], [5.0, 0.0]])
        >>> refine_prototypes(prototypes, queries, temperature=1.0).round(decimals=2)
        tensor([[0.6700, 0.0700],
                [4.5000, 0.0000]])
        >>> torch.equal(refine_prototypes(prototypes, queries[:0]), prototypes)
        True
    """
    if query_embeddings.shape[0] == 0 or steps <= 0 or query_weight == 0:
        return prototypes
    counts = torch.as_tensor(support_counts, dtype=prototypes.dtype, device=prototypes.device)
    counts = counts.expand(prototypes.shape[0])[:, None]
    support_sums = prototypes * counts
    refined = prototypes
    for _ in range(steps):
        log_assign = class_log_probabilities(query_embeddings, refined, temperature)
        weights = query_weight * log_assign.exp()  # [Q, N]
        refined = (support_sums + weights.T @ query_embeddings) / (counts + weights.sum(dim=0)[:, None])
    return refined
