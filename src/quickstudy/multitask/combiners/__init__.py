"""Gradient combiners on the shared parameters (PCGrad, CAGrad, MGDA); ``get_combiner`` builds one by name.

They share the :class:`~quickstudy.multitask.weighting.Weighting` interface: a combiner is another
way to turn task losses into gradients.
"""

from __future__ import annotations

from typing import Any

from quickstudy.multitask.combiners.base import GradientCombiner, WeightedCombiner
from quickstudy.multitask.combiners.cagrad import CAGrad
from quickstudy.multitask.combiners.mgda import MGDA
from quickstudy.multitask.combiners.pcgrad import PCGrad

COMBINERS: dict[str, type[GradientCombiner]] = {"pcgrad": PCGrad, "cagrad": CAGrad, "mgda": MGDA}


def get_combiner(name: str, n_tasks: int, **kwargs: Any) -> GradientCombiner:
    """Build the combiner called ``name`` (one of ``COMBINERS``) for ``n_tasks`` tasks.

    Example:
        >>> get_combiner("cagrad", n_tasks=3).calpha
        0.5
    """
    try:
        cls = COMBINERS[name]
    except KeyError:
        raise ValueError(f"unknown combiner {name!r}; choose from {', '.join(COMBINERS)}") from None
    return cls(n_tasks, **kwargs)


__all__ = ["COMBINERS", "MGDA", "CAGrad", "GradientCombiner", "PCGrad", "WeightedCombiner", "get_combiner"]
