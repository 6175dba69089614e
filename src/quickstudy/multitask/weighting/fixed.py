"""Fixed weighting: constant hand-set weights per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from quickstudy.multitask.weighting.base import LossWeighting


class FixedWeighting(LossWeighting):
    """``sum(w_t * loss_t)`` with constant ``weights``.

    Example:
        >>> FixedWeighting(n_tasks=2, weights=[1.0, 0.5]).weights.tolist()
        [1.0, 0.5]
    """

    weights: Tensor

    def __init__(self, n_tasks: int, weights: Sequence[float]) -> None:
        super().__init__(n_tasks)
        if len(weights) != n_tasks:
            raise ValueError(f"fixed weighting needs {n_tasks} weights, got {len(weights)}")
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))

    def terms(self, losses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        weights = self.weights.to(losses[0].device)
        return weights * torch.stack(list(losses)), weights.clone()
