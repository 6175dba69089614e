"""CAGrad (Liu et al., NeurIPS 2021): the average gradient, bent to improve the worst task."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from quickstudy.multitask.combiners.base import GradientCombiner
from quickstudy.multitask.combiners.simplex import Vector, minimize_on_simplex


class CAGrad(GradientCombiner):
    """Shared gradient ``(g0 + c / |g_w| * g_w) / (1 + calpha^2)`` (LibMTL's ``rescale=1``), where ``g0``
    is the mean task gradient, ``c = calpha * |g0|`` and ``w`` on the simplex minimises
    ``g_w . g0 + c |g_w|`` (the dual of the official implementation, solved on the Gramian).

    Example:
        >>> import torch
        >>> CAGrad(n_tasks=2, calpha=0.0).combine(torch.tensor([[1.0, 0.0], [0.0, 2.0]])).tolist()
        [0.5, 1.0]
    """

    def __init__(self, n_tasks: int, calpha: float = 0.5) -> None:
        super().__init__(n_tasks)
        if calpha < 0:
            raise ValueError(f"calpha must be non-negative, got {calpha}")
        self.calpha = float(calpha)

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        g = gramian.numpy()
        n = g.shape[0]
        mean = np.full(n, 1.0 / n)
        radius = self.calpha * math.sqrt(max(float(mean @ g @ mean), 0.0) + 1e-8)

        def objective(w: Vector) -> tuple[float, Vector]:
            gw = g @ w
            norm = math.sqrt(max(float(w @ gw), 0.0) + 1e-8)
            return float(w @ g @ mean) + radius * norm, g @ mean + radius * gw / norm

        w = minimize_on_simplex(objective, mean)
        norm_w = math.sqrt(max(float(w @ g @ w), 0.0) + 1e-8)
        weights = (mean + radius / norm_w * w) / (1.0 + self.calpha**2)
        return torch.from_numpy(weights)
