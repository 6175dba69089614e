"""Data-parallel training under ``torchrun``: process group set-up and gradient averaging.

Gradients are averaged by one explicit all-reduce after backward rather than by wrapping the model
in ``DistributedDataParallel``: MAML's ``torch.func`` inner loop and the multi-task gradient
combiners compute gradients outside the module's forward hooks, which DDP's reducer cannot see.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Join the process group described by torchrun's environment; ``False`` when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over all processes in one flat all-reduce (parameters without grad skipped)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def mean_across_processes(value: float) -> float:
    if world_size() == 1:
        return value
    # NCCL reduces only CUDA tensors; gloo only CPU ones
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()
