"""The feature extractors every learner shares, by name.

>>> from quickstudy.backbones import build_backbone
>>> net = build_backbone("conv4", in_channels=1)
>>> net.out_features
64

Every backbone maps ``[B, C, H, W]`` images to ``[B, out_features]`` embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from quickstudy.backbones.conv4 import Conv4
from quickstudy.backbones.pretrained import load_backbone_weights
from quickstudy.backbones.resnet12 import ResNet12
from quickstudy.backbones.resnet_fpn import ResNetFPN


class PooledResNetFPN(ResNetFPN):
    """The detector's ResNet + FPN as an image embedder: each pyramid level averaged, concatenated.

    Its state dict is a :class:`ResNetFPN`'s, name for name, so weights pretrained through it
    (``quickstudy pretrain --backbone detector``) load into a detector's ``model.backbone``.
    Pooling every level, not just the deepest trunk map, trains the FPN the detector's heads read.

    Example:
        >>> net = PooledResNetFPN(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), fpn_channels=16)
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 48])
        >>> sorted(net.state_dict()) == sorted(ResNetFPN((8, 16, 32, 64), (1, 1, 1, 1), 16).state_dict())
        True
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        fpn_channels: int = 128,
    ) -> None:
        super().__init__(widths, depths, fpn_channels, in_channels)
        self.out_features = len(self.strides) * fpn_channels

    # An embedder returns [B, out_features], not the pyramid: the one place it differs from its base.
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        levels = super().forward(images)
        return torch.cat([level.mean(dim=(2, 3)) for level in levels.values()], dim=1)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv4": Conv4,
    "resnet12": ResNet12,
    "detector": PooledResNetFPN,
}


def register_backbone(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``build_backbone(name, ...)`` call ``factory(in_channels=..., **kw)``."""
    BACKBONES[name] = factory


def build_backbone(name: str, in_channels: int = 1, **kw: object) -> nn.Module:
    """A backbone by name (``conv4``, ``resnet12``, ``detector``); ``kw`` go to its constructor.

    E.g. ``width=32`` for Conv-4, ``widths=..., depths=..., fpn_channels=...`` for the detector's
    ResNet + FPN. The result has ``.out_features``, the size of its embedding.
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}") from None
    return factory(in_channels=in_channels, **kw)


__all__ = [
    "BACKBONES",
    "Conv4",
    "PooledResNetFPN",
    "ResNet12",
    "build_backbone",
    "load_backbone_weights",
    "register_backbone",
]
