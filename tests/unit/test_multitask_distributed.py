"""Under torchrun (two CPU processes, gloo), a weighting that looks at per-task gradients and loss
history keeps both processes' networks and weights identical: gradients are averaged after the
weighting's own backward, and loss history is averaged across processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from quickstudy.multitask.omniglot import ClassificationTask
from quickstudy.multitask.training import MultiTaskConfig, train_multitask


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    tasks = []
    for t, n in enumerate([3, 2]):
        labels = torch.arange(n).repeat_interleave(4)
        images = torch.randint(0, 256, (len(labels), 1, 28, 28), dtype=torch.uint8, generator=generator)
        tasks.append(ClassificationTask(f"task{t}", n, images, labels, images, labels))
    config = MultiTaskConfig(arch="shared", weighting="gradnorm", steps=3, batch_size=4, width=4, lr=0.01)
    try:
        results = train_multitask(tasks, config, Path(out) / "run")
        torch.save({k: results[k] for k in ("final_weights", "accuracy")}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gradnorm_under_two_processes_keeps_weights_identical(tmp_path: Path) -> None:
    # fork: the children inherit the imported modules (spawn would re-import torch in each, ~5 s).
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["final_weights"] == pytest.approx(ranks[1]["final_weights"], abs=1e-6)
    assert ranks[0]["final_weights"] != pytest.approx([1.0, 1.0], abs=1e-9)  # GradNorm moved them
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]  # the same network on both processes
