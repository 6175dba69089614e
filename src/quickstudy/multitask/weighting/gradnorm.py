"""GradNorm (Chen et al., ICML 2018), in LibMTL's form."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from quickstudy.multitask.gradients import backward_combined, task_gradients
from quickstudy.multitask.weighting.base import Weighting, mean_over_processes


class GradNorm(Weighting):
    """Learnable weights ``w = n_tasks * softmax(logits)`` that pull each task's weighted gradient
    norm on the shared parameters, ``G_t = w_t * |grad_t|``, toward ``mean(G) * r_t ** alpha``, where
    ``r_t`` is the task's loss ratio ``loss_t / loss_t(step 0)`` relative to the mean ratio: tasks that
    train slowly get larger gradients. ``logits`` must be given to the optimizer.

    Example:
        >>> GradNorm(n_tasks=2, alpha=1.5).logits.tolist()
        [0.0, 0.0]
    """

    initial_losses: Tensor

    def __init__(self, n_tasks: int, alpha: float = 1.5) -> None:
        super().__init__(n_tasks)
        self.alpha = float(alpha)
        self.logits = nn.Parameter(torch.zeros(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), float("nan")))

    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        self._check(losses)
        values = torch.stack([loss.detach().float() for loss in losses]).to(self.logits.device)
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(mean_over_processes(values))
        grads = task_gradients(losses, shared_parameters).to(self.logits.device)
        weights = self.n_tasks * torch.softmax(self.logits, dim=0)
        weighted_norms = weights * grads.norm(dim=1)
        ratios = values / self.initial_losses.clamp_min(1e-12)
        relative_rates = ratios / ratios.mean()
        target = (weighted_norms.mean() * relative_rates**self.alpha).detach()
        gradnorm_loss = (weighted_norms - target).abs().sum()
        (logits_grad,) = torch.autograd.grad(gradnorm_loss, [self.logits])
        self.logits.grad = logits_grad if self.logits.grad is None else self.logits.grad + logits_grad
        used = weights.detach()
        backward_combined(losses, used, shared_parameters, used @ grads)
        return used
