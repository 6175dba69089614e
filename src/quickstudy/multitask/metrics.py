"""Δm: the average relative change of each task's metric against its single-task baseline (LibMTL)."""

from __future__ import annotations

from collections.abc import Sequence


def delta_m(
    results: Sequence[float], baseline: Sequence[float], higher_is_better: Sequence[bool] | None = None
) -> float:
    """``100 / T * sum_t (-1)^{s_t} (M_t - B_t) / B_t`` in percent; ``s_t = 0`` when higher is better.

    One metric per task (LibMTL also averages several metrics of a task first). Positive means the
    multi-task model beats the single-task networks on average.

    Example:
        >>> round(delta_m([0.9, 0.5], [0.8, 0.5]), 4)
        6.25
    """
    if len(results) != len(baseline):
        raise ValueError(f"Δm needs one baseline per task: {len(results)} results, {len(baseline)} baselines")
    if not results:
        raise ValueError("Δm of no tasks")
    signs = [1.0 if h else -1.0 for h in (higher_is_better or [True] * len(results))]
    total = 0.0
    for value, base, sign in zip(results, baseline, signs, strict=True):
        if base == 0:
            raise ValueError("Δm is undefined for a baseline metric of 0")
        total += sign * (value - base) / base
    return 100.0 * total / len(results)
