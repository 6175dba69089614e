"""Gradient combiners: a task-weighting rule computed from the per-task gradients of the shared parameters."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from quickstudy.multitask.gradients import backward_combined, task_gradients
from quickstudy.multitask.weighting.base import LossWeighting, Weighting


class GradientCombiner(Weighting):
    """A :class:`Weighting` that replaces the shared parameters' gradient by ``weights @ J``, where
    ``J`` is the ``[n_tasks, n_shared]`` matrix of per-task gradients and ``weights`` depend only on
    the Gramian ``J @ J.T`` (as in torchjd). Non-shared parameters (heads) get their plain gradient.

    ``backward`` returns the weights, so PCGrad's or MGDA's effective task weights can be logged.
    """

    @abstractmethod
    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        """Task weights ``[n_tasks]`` from the Gramian ``[n_tasks, n_tasks]`` (both float64, on the CPU)."""

    def task_weights(self, grads: Tensor) -> Tensor:
        """The weights for per-task gradients ``grads`` ``[n_tasks, n]``."""
        # One small device-to-host copy of the Gramian; the solvers run on the CPU in float64.
        return self.weights_from_gramian((grads @ grads.T).double().cpu()).to(grads)

    def combine(self, grads: Tensor) -> Tensor:
        """The combined gradient of ``grads`` ``[n_tasks, n]``: ``task_weights(grads) @ grads``."""
        return self.task_weights(grads) @ grads

    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        self._check(losses)
        grads = task_gradients(losses, shared_parameters)
        weights = self.task_weights(grads)
        heads = torch.ones(self.n_tasks, device=grads.device)
        backward_combined(losses, heads, shared_parameters, weights @ grads)
        return weights


class WeightedCombiner(Weighting):
    """A loss weighting and a gradient combiner together: the combiner works on the weighting's
    scaled losses (:meth:`LossWeighting.terms`), e.g. PCGrad on uncertainty-weighted losses. The
    weighting's own parameters (uncertainty's log-variances) learn from the plain gradient of its
    terms, as the heads do.

    ``backward`` returns the weight each raw task loss got on the shared parameters: the combiner's
    weight times the weighting's.
    """

    def __init__(self, weighting: LossWeighting, combiner: GradientCombiner) -> None:
        if weighting.n_tasks != combiner.n_tasks:
            raise ValueError(f"{weighting.n_tasks} tasks to weight but {combiner.n_tasks} to combine")
        super().__init__(weighting.n_tasks)
        self.weighting = weighting
        self.combiner = combiner

    def backward(self, losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        self._check(losses)
        terms, weights = self.weighting.terms(losses)
        return self.combiner.backward(list(terms.unbind()), shared_parameters) * weights.to(terms.device)
