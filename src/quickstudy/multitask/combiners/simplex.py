"""Small solvers over the probability simplex, used by MGDA and CAGrad (tens of tasks at most)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float64]


def project_to_simplex(v: Vector) -> Vector:
    """Euclidean projection of ``v`` onto ``{w >= 0, sum(w) = 1}`` (Duchi et al., 2008)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    index = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - cumulative / index > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1.0), 0.0)


def minimize_on_simplex(
    objective: Callable[[Vector], tuple[float, Vector]],
    start: Vector,
    max_iters: int = 200,
    tolerance: float = 1e-10,
) -> Vector:
    """Projected gradient descent with backtracking line search; ``objective(w) -> (value, gradient)``.

    Enough for the convex, low-dimensional problems of MGDA and CAGrad.
    """
    w = project_to_simplex(start)
    value, grad = objective(w)
    step = 1.0
    for _ in range(max_iters):
        while True:
            candidate = project_to_simplex(w - step * grad)
            candidate_value, candidate_grad = objective(candidate)
            moved = candidate - w
            # Sufficient decrease for a step of size ``step`` (the usual projected-gradient test).
            if candidate_value <= value + grad @ moved + (moved @ moved) / (2 * step) or step < 1e-20:
                break
            step *= 0.5
        if value - candidate_value <= tolerance * max(1.0, abs(value)):
            return candidate if candidate_value < value else w
        w, value, grad = candidate, candidate_value, candidate_grad
        step *= 2.0
    return w
