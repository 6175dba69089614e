"""The recognition task: an embedding per box, classified by scaled cosine similarity to prototypes.

A box's class label may be a *set* S of allowed classes (after a taxonomy split, S = {A1, A2});
its loss is ``-log Σ_{c∈S} p(c | box)`` (:func:`partial_label_loss`), which is the usual
cross-entropy when |S| = 1 and adds nothing when S is empty (a box without class).

The head is trained two ways at once: against learned class vectors (one row per training
class), and episodically — prototypes are the mean embeddings of a random half of the batch's
single-label boxes (the support) and the other boxes are classified against them — because at
``learn`` time a new class is exactly such a mean of K support embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a non-empty allowed set of ``-log Σ_{c∈S} softmax(logits)_c``.

    ``logits [N, C]``, ``allowed [N, C]`` bool. Rows whose S is empty are skipped; with no such
    row at all the result is a zero that is still connected to ``logits`` (so backward works).

    >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> one = partial_label_loss(logits, torch.tensor([[True, False, False]]))
    >>> torch.allclose(one, F.cross_entropy(logits, torch.tensor([0])))
    True
    """
    rows = allowed.any(-1)
    if not rows.any():
        return logits.sum() * 0
    log_p = F.log_softmax(logits[rows].float(), -1)
    return -torch.logsumexp(log_p.masked_fill(~allowed[rows], -math.inf), -1).mean()


class RecognitionHead(nn.Module):
    """RoIAlign on every pyramid level (summed) → MLP → L2-normalised embedding; scaled cosine logits.

    >>> head = RecognitionHead(8, embedding_dim=4, strides=(8,))
    >>> rois = torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0]])  # (image index, x1, y1, x2, y2)
    >>> embedding = head.embed([torch.randn(1, 8, 8, 8)], rois)
    >>> embedding.shape, bool(torch.allclose(embedding.norm(dim=-1), torch.ones(1)))
    (torch.Size([1, 4]), True)
    """

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int = 128,
        hidden: int = 256,
        pool_size: int = 7,
        strides: Sequence[int] = (8, 16, 32),
        scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.strides = tuple(strides)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * pool_size * pool_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embedding_dim),
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def embed(self, features: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[K, D]`` of ``rois [K, 5]`` (image index, x1, y1, x2, y2) in pixels."""
        pooled = sum(
            roi_align(
                feature.float(), rois.float(), self.pool_size, 1.0 / stride, sampling_ratio=2, aligned=True
            )
            for feature, stride in zip(features, self.strides, strict=True)
        )
        return F.normalize(self.mlp(pooled), dim=-1)

    def logits(self, embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``scale · cos(embedding, prototype)``: ``[K, D] × [C, D] → [K, C]``."""
        return self.log_scale.exp() * embeddings @ F.normalize(prototypes, dim=-1).T

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        allowed: torch.Tensor,
        class_vectors: torch.Tensor,
        support: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``loss_classes`` (vs learned class vectors) and ``loss_episode`` (vs batch prototypes).

        ``embeddings [K, D]``, ``allowed [K, C]`` bool, ``class_vectors [C, D]``, ``support [K]``
        bool (which boxes form the episode's support; only single-label ones are used).
        """
        loss_classes = partial_label_loss(self.logits(embeddings, class_vectors), allowed)
        support = support & (allowed.sum(-1) == 1)
        one_hot = (allowed & support[:, None]).float()  # [K, C]
        present = one_hot.sum(0) > 0
        query = ~support & (allowed & present).any(-1)
        if not query.any():
            return {"loss_classes": loss_classes, "loss_episode": embeddings.sum() * 0}
        prototypes = one_hot.T @ embeddings.float()  # sums; normalised in logits()
        logits = self.logits(embeddings[query], prototypes).masked_fill(~present, -math.inf)
        loss_episode = partial_label_loss(logits, allowed[query] & present)
        return {"loss_classes": loss_classes, "loss_episode": loss_episode}
