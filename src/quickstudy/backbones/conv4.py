"""Conv-4: the four-block convolutional backbone of Prototypical Networks and MAML."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, *, track_running_stats: bool = True) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU -> 2x2 max-pool: one of the four Conv-4 blocks.

    The conv has no bias: batch norm subtracts it again, so its gradient is zero up to rounding,
    which Adam would blow up into random steps.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks of ``width`` filters, then a global average pool to ``[B, width]``.

    On 28x28 Omniglot the fourth block leaves a 1x1 map, so the pool is the identity and the
    embedding is exactly the 64-d one of the papers; on larger images it averages over space
    (texture-like NEU defects), which keeps ``out_features`` independent of the image size.

    ``track_running_stats=False`` makes batch norm always use the statistics of the batch it
    sees, as MAML does at meta-test time.

    Example:
        >>> net = Conv4(in_channels=1)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 1, width: int = 64, *, track_running_stats: bool = True) -> None:
        super().__init__()
        self.out_features = width
        self.encoder = nn.Sequential(
            conv_block(in_channels, width, track_running_stats=track_running_stats),
            conv_block(width, width, track_running_stats=track_running_stats),
            conv_block(width, width, track_running_stats=track_running_stats),
            conv_block(width, width, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=(2, 3))
