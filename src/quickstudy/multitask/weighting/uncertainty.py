"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018), in LibMTL's form."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from quickstudy.multitask.weighting.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """``sum(exp(-s_t) / 2 * loss_t + s_t / 2)`` with a learnable log-variance ``s_t`` per task.

    At the optimum ``exp(s_t) = loss_t``, so a task whose loss stays high (noisy labels) is
    down-weighted. ``log_variance`` must be given to the optimizer (it is in ``.parameters()``).

    Example:
        >>> UncertaintyWeighting(n_tasks=3).log_variance.shape
        torch.Size([3])
    """

    def __init__(self, n_tasks: int, initial_log_variance: float = 0.0) -> None:
        super().__init__(n_tasks)
        self.log_variance = nn.Parameter(torch.full((n_tasks,), float(initial_log_variance)))

    def terms(self, losses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s = self.log_variance
        stacked = torch.stack(list(losses)).to(s.dtype)
        return 0.5 * torch.exp(-s) * stacked + 0.5 * s, (0.5 * torch.exp(-s)).detach()
