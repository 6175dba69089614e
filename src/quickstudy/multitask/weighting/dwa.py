"""Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from quickstudy.multitask.weighting.base import LossWeighting, mean_over_processes


class DynamicWeightAverage(LossWeighting):
    """Weights ``n_tasks * softmax(r / temperature)``, where ``r_t`` is task t's mean loss over the last
    window of ``window`` steps divided by its mean loss over the window before: a task whose loss
    falls slowly gets more weight. The paper's window is an epoch; the first two windows use 1.

    Example:
        >>> DynamicWeightAverage(n_tasks=2, window=10).temperature
        2.0
    """

    loss_sums: Tensor
    window_means: Tensor
    steps_seen: Tensor

    def __init__(self, n_tasks: int, temperature: float = 2.0, window: int = 50) -> None:
        super().__init__(n_tasks)
        if window < 1:
            raise ValueError(f"window must be at least 1 step, got {window}")
        self.temperature = float(temperature)
        self.window = window
        # Buffers, so a resumed run continues with the same history.
        self.register_buffer("loss_sums", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("window_means", torch.full((2, n_tasks), float("nan"), dtype=torch.float64))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def current_weights(self) -> Tensor:
        """The weights the next step will use."""
        previous, last = self.window_means[0], self.window_means[1]
        if torch.isnan(previous).any():
            return torch.ones(self.n_tasks)
        rate = (last / previous).float()
        return self.n_tasks * torch.softmax(rate / self.temperature, dim=0)

    def terms(self, losses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        stacked = torch.stack(list(losses))
        weights = self.current_weights().to(stacked.device)
        terms = weights.to(stacked.dtype) * stacked
        self.loss_sums += stacked.detach().to(self.loss_sums.device, torch.float64)
        self.steps_seen += 1
        if int(self.steps_seen) % self.window == 0:
            self.window_means[0] = self.window_means[1].clone()
            self.window_means[1] = mean_over_processes(self.loss_sums / self.window)
            self.loss_sums.zero_()
        return terms, weights
