"""The fine-tuning baseline (Chen et al. 2019, "A Closer Look at Few-shot Classification").

Pretrain the backbone with an ordinary classifier over all base classes; for a new task, freeze
it and fit a fresh cosine classifier on the support embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.episodes import Episode
from quickstudy.meta.base import FewShotLearner, Predictor, class_means, feature_size, way_of


class CosineClassifier(nn.Module):
    """``scale * cos(feature, weight_c)`` logits (Baseline++): scores do not grow with feature norm.

    Example:
        >>> CosineClassifier(64, 5)(torch.rand(3, 64)).shape
        torch.Size([3, 5])
    """

    def __init__(self, in_features: int, classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, in_features) * in_features**-0.5)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class Finetune(FewShotLearner):
    """Base-class pretraining, then a new cosine head fitted on the frozen support embeddings.

    Meta-training episodes are used as plain classification batches: every support and query image
    is labelled with its base class (``episode.classes``) and classified among all
    ``num_classes`` base classes. The returned logits are those of the episode's classes, so
    query accuracy means the same as for the other learners.

    ``fit`` starts the new head at the normalised class means and takes ``head_steps`` Adam steps.

    Example:
        >>> from quickstudy.backbones import build_backbone
        >>> learner = Finetune(build_backbone("conv4"), num_classes=20, head_steps=5)
        >>> predictor = learner.eval().fit(torch.rand(5, 1, 28, 28), torch.arange(5))
        >>> predictor(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    algo = "finetune"

    def __init__(
        self, backbone: nn.Module, num_classes: int, *, head_steps: int = 100, head_lr: float = 0.01
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = CosineClassifier(feature_size(backbone), num_classes)
        self.head_steps, self.head_lr = head_steps, head_lr

    def meta_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.backbone(torch.cat([episode.support_x, episode.query_x])))
        targets = episode.classes[torch.cat([episode.support_y, episode.query_y])]
        query_logits = logits[len(episode.support_y) :, episode.classes]
        return F.cross_entropy(logits, targets), query_logits

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        with torch.no_grad():
            support = self.backbone(support_x)
        way = way_of(support_y)
        head = CosineClassifier(support.shape[1], way, scale=self.classifier.scale).to(support.device)
        with torch.no_grad():
            head.weight.copy_(F.normalize(class_means(support, support_y, way), dim=1))
        optimizer = torch.optim.Adam(head.parameters(), lr=self.head_lr)
        with torch.enable_grad():
            for _ in range(self.head_steps):
                optimizer.zero_grad()
                F.cross_entropy(head(support), support_y).backward()
                optimizer.step()
        head.requires_grad_(False)

        @torch.no_grad()
        def predict(query_x: torch.Tensor) -> torch.Tensor:
            return head(self.backbone(query_x))

        return predict
