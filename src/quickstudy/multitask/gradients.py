"""Per-task gradients on the shared parameters, and writing a combined gradient back.

Combiners and GradNorm need one gradient per task, but only on the *shared* parameters: the
task-specific parameters (heads) get their plain gradient from one backward of the weighted sum,
pruned so that it does not run through the shared trunk again. Cost per step is then T backward
passes to the shared parameters plus one pass over the heads, whatever the heads' size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def task_gradients(losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
    """Gradient of each loss on the shared parameters, flattened: ``[n_tasks, n_shared_elements]``.

    A parameter a loss does not reach gets a zero gradient. The graph is kept for a later backward.
    """
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(shared_parameters), retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                    for g, p in zip(grads, shared_parameters, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def _graph_leaves(roots: Sequence[Tensor]) -> list[Tensor]:
    """The leaf tensors requiring grad that ``roots`` depend on (walks the autograd graph once)."""
    leaves: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack = [root.grad_fn for root in roots if root.grad_fn is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if variable is not None:
            leaves[id(variable)] = variable
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return list(leaves.values())


def backward_combined(
    losses: Sequence[Tensor],
    weights: Tensor,
    shared_parameters: Sequence[Tensor],
    shared_gradient: Tensor,
) -> None:
    """Accumulate ``shared_gradient`` (flat) into the shared parameters' ``.grad``, and the gradient
    of ``sum(weights * losses)`` into every other parameter the losses reach.

    The second backward is restricted to the non-shared leaves, so autograd prunes the trunk.
    """
    shared_ids = {id(p) for p in shared_parameters}
    others = [leaf for leaf in _graph_leaves(losses) if id(leaf) not in shared_ids]
    if others:
        total = (weights.to(losses[0].device, losses[0].dtype) * torch.stack(list(losses))).sum()
        torch.autograd.backward(total, inputs=others)
    offset = 0
    for p in shared_parameters:
        n = p.numel()
        grad = shared_gradient[offset : offset + n].view_as(p).to(p.dtype)
        p.grad = grad.clone() if p.grad is None else p.grad + grad
        offset += n
