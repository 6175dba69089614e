"""The interface every loss weighting and gradient combiner implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch.distributed as dist
from torch import Tensor, nn


class Weighting(nn.Module, ABC):
    """Turns one loss per task into gradients: ``backward`` calls autograd itself and returns the
    task weights it used (a detached ``[n_tasks]`` tensor).

    It is an ``nn.Module`` so that learnable weights (uncertainty's log-variances, GradNorm's
    weights) join the optimizer through ``.parameters()`` and its state (loss history) is saved
    with ``state_dict()``: make it a submodule of the model that is trained and checkpointed.

    Example:
        >>> import torch
        >>> from quickstudy.multitask.weighting import get_weighting
        >>> w = torch.ones(3, requires_grad=True)
        >>> losses = [(w * 2).sum(), (w**2).sum()]
        >>> get_weighting("equal", n_tasks=2).backward(losses, shared_parameters=[w]).tolist()
        [1.0, 1.0]
        >>> w.grad.tolist()
        [4.0, 4.0, 4.0]
    """

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")
        self.n_tasks = n_tasks

    @abstractmethod
    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        """Accumulate gradients of the task ``losses`` into ``.grad``; return the weights used.

        ``shared_parameters`` are the parameters every task updates (the trunk); methods that look
        at per-task gradients look at these only.
        """

    def _check(self, losses: Sequence[Tensor]) -> None:
        if len(losses) != self.n_tasks:
            raise ValueError(f"{type(self).__name__} expects {self.n_tasks} losses, got {len(losses)}")


class LossWeighting(Weighting):
    """A weighting that looks at the losses only: it minimises the sum of per-task terms (each task's
    loss scaled, plus any term of the weighting's own), so a gradient combiner can work on those
    terms in place of the raw losses (:class:`~quickstudy.multitask.combiners.WeightedCombiner`)."""

    @abstractmethod
    def terms(self, losses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``([n_tasks] terms to minimise the sum of, [n_tasks] detached weights of the losses)``;
        called once per step (weightings with a loss history update it here)."""

    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        self._check(losses)
        terms, weights = self.terms(losses)
        terms.sum().backward()
        return weights


def mean_over_processes(values: Tensor) -> Tensor:
    """``values`` averaged over the processes of a torchrun job (itself when there is one process).

    Weightings whose weights come from loss history use it, so every process uses the same weights.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()
