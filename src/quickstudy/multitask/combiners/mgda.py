"""MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018): the min-norm point of the task gradients' hull."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from quickstudy.multitask.combiners.base import GradientCombiner
from quickstudy.multitask.combiners.simplex import Vector, minimize_on_simplex


class MGDA(GradientCombiner):
    """Shared gradient ``sum_t w_t g_t`` with ``w`` on the simplex minimising ``|sum_t w_t g_t|^2``:
    a direction that decreases every task's loss (or zero at a Pareto-stationary point).
    Weights sum to one, as in the paper and LibMTL (no gradient normalisation).

    Example:
        >>> import torch
        >>> g = MGDA(n_tasks=2).combine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> [round(v, 4) for v in g.tolist()]
        [0.8, 0.4]
    """

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        g = gramian.numpy()
        n = g.shape[0]
        if n == 2:  # closed form on the segment between the two gradients
            denominator = g[0, 0] + g[1, 1] - 2 * g[0, 1]
            gamma = 0.5 if denominator <= 0 else float(np.clip((g[1, 1] - g[0, 1]) / denominator, 0, 1))
            return torch.tensor([gamma, 1.0 - gamma], dtype=gramian.dtype)

        def objective(w: Vector) -> tuple[float, Vector]:
            gw = g @ w
            return float(w @ gw), 2.0 * gw

        return torch.from_numpy(minimize_on_simplex(objective, np.full(n, 1.0 / n)))
