"""PCGrad (Yu et al., NeurIPS 2020): project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from quickstudy.multitask.combiners.base import GradientCombiner


class PCGrad(GradientCombiner):
    """For each task i, in a random order of the others j: if ``g_i' . g_j < 0``, remove the component
    of ``g_i'`` along ``g_j``; the shared gradient is the sum of the projected ``g_i'``. Worked on the
    Gramian, so each ``g_i'`` is a weight vector over the original gradients (as in torchjd).

    Example:
        >>> import torch
        >>> PCGrad(n_tasks=2).combine(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])).tolist()
        [0.5, 1.5]
    """

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        g = gramian.numpy()  # numpy: the T^2 scalar loop is ~10x faster than on torch scalars
        n = g.shape[0]
        weights = np.zeros(n)
        for i in range(n):
            projected = np.zeros(n)  # g_i' as weights over the g_j
            projected[i] = 1.0
            for j in torch.randperm(n).tolist():  # global RNG: the Trainer checkpoints its state
                if j == i or g[j, j] <= 0:
                    continue
                inner = g[j] @ projected
                if inner < 0.0:
                    projected[j] -= inner / g[j, j]
            weights += projected
        return torch.from_numpy(weights)
