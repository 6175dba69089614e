"""Scoring with a fixed embedding: test-time views, and nearest-mean classification of centred features.

A network trained without the test classes (a self-supervised pretraining run, or a meta-trained
learner's backbone) embeds every image. With test-time augmentation each embedding is the mean over
flips and quarter turns of the image (:func:`augmented_views`). Nearest-mean scoring is SimpleShot's
(Wang et al. 2019, "CL2N"): subtract the mean embedding of the training classes' images, L2-normalise,
and give a query the class of the nearest support mean, ProtoNet's rule (transductive if asked).
P7-u's headline number (BENCHMARKS.md) is this scoring of a pretrained network with eight views.

>>> learner = nearest_mean_learner(backbone, sets.train, views=8)  # doctest: +SKIP
>>> report = evaluate(learner, sampler, episodes=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.classification import ImageClassSet
from quickstudy.errors import QuickstudyError
from quickstudy.meta.base import FewShotLearner, feature_size
from quickstudy.meta.evaluation import embed_images, embeds_each_image
from quickstudy.meta.protonet import ProtoNet

VIEW_COUNTS = (1, 2, 4, 8)
"""How many views test-time augmentation may average: the image; + mirrored left-right; + upside
down and turned 180 degrees (the flips that keep the image axes); + each of those turned 90 degrees."""


def augmented_views(images: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The first ``count`` views of ``[B, C, H, W]`` images, in the order :data:`VIEW_COUNTS` describes.

    Example:
        >>> image = torch.arange(4.0).view(1, 1, 2, 2)
        >>> [v.flatten().tolist() for v in augmented_views(image, 4)]
        [[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 3.0, 2.0], [2.0, 3.0, 0.0, 1.0], [3.0, 2.0, 1.0, 0.0]]
    """
    if count not in VIEW_COUNTS:
        raise ValueError(f"test-time views: {count} is not one of {VIEW_COUNTS}")
    flips = [images, images.flip(3), images.flip(2), images.flip(2, 3)]
    return (flips + [torch.rot90(view, 1, dims=(2, 3)) for view in flips])[:count]


class ViewAveraged(nn.Module):
    """``backbone``'s embedding averaged over ``views`` test-time views of each image; with ``centre``
    set, then centred on it and L2-normalised (CL2N)."""

    centre: torch.Tensor | None

    def __init__(self, backbone: nn.Module, views: int = 1, centre: torch.Tensor | None = None) -> None:
        super().__init__()
        if views not in VIEW_COUNTS:
            raise QuickstudyError(f"--tta {views}: choose one of {', '.join(map(str, VIEW_COUNTS))}")
        self.backbone = backbone
        self.views = views
        self.register_buffer("centre", centre)
        self.out_features = feature_size(backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.stack([self.backbone(v).float() for v in augmented_views(images, self.views)]).mean(
            0
        )
        if self.centre is None:
            return features
        return F.normalize(features - self.centre, dim=1)


def nearest_mean_learner(
    backbone: nn.Module,
    base: ImageClassSet,
    *,
    views: int = 1,
    transductive_steps: int = 0,
    device: str | torch.device = "cpu",
) -> ProtoNet:
    """A ProtoNet on ``backbone``'s CL2N features (its own weights untouched, batch norm in eval mode),
    centred on the mean embedding of ``base`` (the training classes' images) over ``views`` views."""
    embedding = ViewAveraged(backbone, views).to(device).eval()
    learner = ProtoNet(embedding, transductive_steps=transductive_steps)
    if not embeds_each_image(learner):
        raise QuickstudyError(
            "nearest-mean scoring needs a backbone whose batch norm keeps running statistics"
        )
    embedding.centre = embed_images(embedding, base, device).mean(dim=0)
    return learner


def with_test_time_views(learner: FewShotLearner, views: int) -> FewShotLearner:
    """``learner`` embedding each image as the mean over ``views`` views (``fit`` and its predictor)."""
    if views == 1:
        return learner
    if not embeds_each_image(learner):
        raise QuickstudyError(
            f"--tta averages each image's embedding; {learner.algo}'s depends on the episode"
        )
    learner.backbone = ViewAveraged(learner.backbone, views)
    return learner
