"""Loss weighting methods, one per file, behind :class:`Weighting`; ``get_weighting`` builds one by name."""

from __future__ import annotations

from typing import Any

from quickstudy.multitask.weighting.base import LossWeighting, Weighting
from quickstudy.multitask.weighting.dwa import DynamicWeightAverage
from quickstudy.multitask.weighting.equal import EqualWeighting
from quickstudy.multitask.weighting.fixed import FixedWeighting
from quickstudy.multitask.weighting.gradnorm import GradNorm
from quickstudy.multitask.weighting.uncertainty import UncertaintyWeighting

WEIGHTINGS: dict[str, type[Weighting]] = {
    "equal": EqualWeighting,
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNorm,
    "dwa": DynamicWeightAverage,
}


def get_weighting(name: str, n_tasks: int, **kwargs: Any) -> Weighting:
    """Build the weighting called ``name`` (one of ``WEIGHTINGS``) for ``n_tasks`` tasks.

    Example:
        >>> get_weighting("uncertainty", n_tasks=2).log_variance.shape
        torch.Size([2])
    """
    try:
        cls = WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}") from None
    return cls(n_tasks, **kwargs)


__all__ = [
    "WEIGHTINGS",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FixedWeighting",
    "GradNorm",
    "LossWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "get_weighting",
]
