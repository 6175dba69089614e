"""ResNet-12: the few-shot residual backbone of TADAM, MetaOptNet and FEAT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock12(nn.Module):
    """Three 3x3 conv-BN-LeakyReLU(0.1) layers, a 1x1 conv-BN shortcut, then a 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, *, track_running_stats: bool = True) -> None:
        super().__init__()

        def bn() -> nn.BatchNorm2d:
            return nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats)

        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = bn()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = bn()
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn3 = bn()
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), bn())
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.relu(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """Four residual blocks (default widths 64-160-320-640 as in MetaOptNet/FEAT), global average pool.

    DropBlock, which MetaOptNet adds for miniImageNet, is left out: on the small grayscale sets
    here it is not needed to fit, and it would make MAML's inner loop stochastic.

    Example:
        >>> net = ResNet12(in_channels=1, widths=(16, 32, 64, 128))
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 160, 320, 640),
        *,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"ResNet-12 has four blocks; got widths {tuple(widths)}")
        blocks = []
        channels = in_channels
        for width in widths:
            blocks.append(ResidualBlock12(channels, width, track_running_stats=track_running_stats))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))
