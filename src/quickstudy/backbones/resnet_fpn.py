"""A small ResNet with a feature pyramid, from torchvision building blocks, for the detector.

The trunk is torchvision's ResNet made of ``BasicBlock`` s with configurable widths and depths
(``widths=(64, 128, 256, 512)``, ``depths=(2, 2, 2, 2)`` is resnet18) and a one-channel stem,
because surfaces are grayscale. The pyramid is ``torchvision.ops.FeaturePyramidNetwork`` on the
last three stages (strides 8, 16, 32), which is enough for 200-pixel images. With ``fine=True`` a
fourth map, ``"fine"``, is the first stage (stride 4) through a 1x1 lateral to ``fpn_channels``: FPN's
P2 before its top-down sum and 3x3, for the detector's recognition head only (the sum with P3 happens
where the head samples both at a box's points).

>>> import torch
>>> net = ResNetFPN(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), fpn_channels=16)
>>> [f.shape[-1] for f in net(torch.zeros(1, 1, 64, 64)).values()]
[8, 4, 2]
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.ops import FeaturePyramidNetwork

from quickstudy.backbones.pretrained import load_backbone_weights
from quickstudy.errors import QuickstudyError

FPN_STRIDES = (8, 16, 32)
FINE_STRIDE = 4


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
    layers: list[nn.Module] = [BasicBlock(in_planes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetTrunk(nn.Module):
    """torchvision's ResNet layout (``conv1``, ``bn1``, ``layer1..4``) so its weights load by name."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"a ResNet has 4 stages: got widths {widths}, depths {depths}")
        self.layer1 = _stage(widths[0], widths[0], depths[0], 1)
        self.layer2 = _stage(widths[0], widths[1], depths[1], 2)
        self.layer3 = _stage(widths[1], widths[2], depths[2], 2)
        self.layer4 = _stage(widths[2], widths[3], depths[3], 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of stages 1 to 4 (strides 4, 8, 16, 32)."""
        x = self.relu(self.bn1(self.conv1(x)))
        # max-pooling channels-last is the same values, ~10x faster on a CPU (vectorised over
        # channels; it was 5% of the detector's inference), and the stages keep the usual layout
        x = self.maxpool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


class ResNetFPN(nn.Module):
    """ResNet trunk + FPN: ``[B, 1, H, W]`` → ``{"0": P3, "1": P4, "2": P5}`` (and ``"fine"``, stride 4,
    with ``fine``), ``fpn_channels`` each; ``strides`` are the pyramid's, ``map_strides`` every map's.

    ``weights`` is a torchvision-format ResNet state dict file (e.g. ``resnet18-f37072fd.pth``) for
    a trunk with the same widths and depths; its RGB stem is summed over colour channels so that it
    sees grayscale, and its ``fc`` layer is dropped.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        fpn_channels: int = 128,
        in_channels: int = 1,
        weights: str | os.PathLike[str] | None = None,
        fine: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(widths, depths, in_channels)
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), fpn_channels)
        self.out_channels = fpn_channels
        self.strides = FPN_STRIDES
        self.fine: nn.Conv2d | None = None
        self.map_strides: tuple[int, ...] = FPN_STRIDES
        if fine:
            # zero at first: training starts from the pyramid alone and adds what the fine map tells
            self.fine = conv1x1(widths[0], fpn_channels)
            nn.init.zeros_(self.fine.weight)
            self.map_strides = (*FPN_STRIDES, FINE_STRIDE)
        if weights is not None:
            self.load_torchvision_weights(weights)

    def load_torchvision_weights(self, path: str | os.PathLike[str]) -> None:
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
            raise QuickstudyError(f"{path}: not a readable torchvision weights file ({error})") from None
        if not isinstance(state, dict):
            raise QuickstudyError(f"{path}: expected a torchvision ResNet state dict")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if isinstance(stem, torch.Tensor) and stem.ndim == 4 and self.trunk.conv1.weight.shape[1] == 1:
            state["conv1.weight"] = stem.sum(dim=1, keepdim=True)  # RGB stem -> grayscale stem
        load_backbone_weights(self.trunk, state)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        first, *features = self.trunk(images)
        maps = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        if self.fine is not None:
            maps["fine"] = self.fine(first)
        return maps
