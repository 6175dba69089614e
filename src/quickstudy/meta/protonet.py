"""Prototypical Networks (Snell, Swersky, Zemel 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.episodes import Episode
from quickstudy.meta.base import FewShotLearner, Predictor, class_means, squared_distances, way_of
from quickstudy.meta.transductive import refine_prototypes


class ProtoNet(FewShotLearner):
    """Classify a query by its nearest class mean (prototype) in the backbone's embedding.

    ``transductive_steps > 0`` refines the prototypes with the unlabelled queries of the episode
    (:func:`quickstudy.meta.transductive.refine_prototypes`) before classifying them.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> learner = ProtoNet(build_backbone("conv4"))
        >>> predictor = learner.eval().fit(torch.rand(5, 1, 28, 28), torch.arange(5))
        >>> predictor(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    algo = "protonet"

    def __init__(self, backbone: nn.Module, *, transductive_steps: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.transductive_steps = transductive_steps

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # One forward pass over support and query, so batch norm sees the whole episode.
        features = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        support, query = features[: len(episode.support_y)], features[len(episode.support_y) :]
        logits = -squared_distances(query, class_means(support, episode.support_y, episode.way))
        return F.cross_entropy(logits, episode.query_y), logits

    @torch.no_grad()
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        way = way_of(support_y)
        prototypes = class_means(self.backbone(support_x), support_y, way)
        support_counts = torch.bincount(support_y, minlength=way)

        @torch.no_grad()
        def predict(query_x: torch.Tensor) -> torch.Tensor:
            query = self.backbone(query_x)
            refined = prototypes
            if self.transductive_steps > 0:
                refined = refine_prototypes(
                    prototypes, query, steps=self.transductive_steps, support_counts=support_counts
                )
            return -squared_distances(query, refined)

        return predict
