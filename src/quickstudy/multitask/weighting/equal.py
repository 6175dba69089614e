"""Equal weighting (EW): the plain sum of task losses, the baseline every method is measured against."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from quickstudy.multitask.weighting.base import LossWeighting


class EqualWeighting(LossWeighting):
    """``sum(losses)``.

    Example:
        >>> EqualWeighting(n_tasks=2)
        EqualWeighting()
    """

    def terms(self, losses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return torch.stack(list(losses)), torch.ones(self.n_tasks, device=losses[0].device)
