"""The one interface every few-shot learner implements."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from quickstudy.data.episodes import Episode

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""``predictor(query_x) -> scores [Q, way]``: higher means more likely that class."""


class FewShotLearner(nn.Module):
    """A learner meta-trains on episodes and adapts to a new support set.

    - ``meta_loss(episode) -> (loss, query_logits)``: one meta-training task; the Trainer
      backpropagates the loss (averaged over a meta-batch).
    - ``fit(support_x, support_y) -> predictor``: adapt to ``way`` new classes labelled
      ``0..way-1`` from a handful of images; ``predictor(query_x)`` scores the queries.

    Example:
        >>> learner = ProtoNet(build_backbone("conv4"))  # doctest: +SKIP
        >>> predictor = learner.fit(episode.support_x, episode.support_y)  # doctest: +SKIP
        >>> accuracy = (predictor(episode.query_x).argmax(1) == episode.query_y).float().mean()  # doctest: +SKIP
    """

    algo: str = ""
    backbone: nn.Module
    adapts_backbone = False
    """True when ``fit`` changes the backbone (MAML): its embeddings cannot be computed once per image."""

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        raise NotImplementedError


def feature_size(backbone: nn.Module) -> int:
    """The embedding size a backbone declares as ``out_features``."""
    return int(backbone.out_features)  # type: ignore[arg-type]


def way_of(support_y: torch.Tensor) -> int:
    return int(support_y.max()) + 1


def squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``[Q, way]`` squared Euclidean distances, the metric Snell et al. (2017) found best."""
    return (queries[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)


def class_means(features: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """``[way, D]`` mean feature of each class (the prototypes of Snell et al. 2017)."""
    sums = torch.zeros(way, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=way).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]
