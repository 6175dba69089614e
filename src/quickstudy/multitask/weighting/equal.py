"""Equal weighting (EW): the plain sum of task losses, the baseline every method is measured against."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from quickstudy.multitask.weighting.base import Weighting


class EqualWeighting(Weighting):
    """``sum(losses)``.

    Example:
        >>> EqualWeighting(n_tasks=2)
        EqualWeighting()
    """

    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        self._check(losses)
        torch.stack(list(losses)).sum().backward()
        return torch.ones(self.n_tasks, device=losses[0].device)
