"""The feature extractors every learner shares, by name.

>>> from quickstudy.backbones import build_backbone
>>> net = build_backbone("conv4", in_channels=1)
>>> net.out_features
64

Every backbone maps ``[B, C, H, W]`` images to ``[B, out_features]`` embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from quickstudy.backbones.conv4 import Conv4
from quickstudy.backbones.pretrained import load_backbone_weights
from quickstudy.backbones.resnet12 import ResNet12

BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "resnet12": ResNet12}


def register_backbone(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``build_backbone(name, ...)`` call ``factory(in_channels=..., **kw)``."""
    BACKBONES[name] = factory


def build_backbone(name: str, in_channels: int = 1, **kw: object) -> nn.Module:
    """A backbone by name (``conv4``, ``resnet12``); ``kw`` go to its constructor (e.g. ``width=32``).

    The result has ``.out_features``, the size of its embedding.
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}") from None
    return factory(in_channels=in_channels, **kw)


__all__ = ["BACKBONES", "Conv4", "ResNet12", "build_backbone", "load_backbone_weights", "register_backbone"]
