"""The shared training engine: exact resume after a kill, atomic checkpoints, clear errors, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from quickstudy.errors import QuickstudyError
from quickstudy.train import Trainer, load_checkpoint, save_checkpoint, step_generator


def _problem(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)


def _step_fn(model: nn.Module):
    target = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def step(step: int) -> dict[str, torch.Tensor]:
        x = torch.randn(16, 4, generator=step_generator(7, step))
        y = x @ target
        loss = nn.functional.mse_loss(model(x), y)
        return {"loss": loss, "mae": (model(x) - y).abs().mean().detach()}

    return step


class _Killed(Exception):
    pass


def _resumable_trainer(seed: int, out_dir: Path) -> tuple[nn.Module, Trainer]:
    model, optimizer, scheduler = _problem(seed)
    trainer = Trainer(
        model,
        optimizer,
        scheduler=scheduler,
        out_dir=out_dir,
        steps=12,
        kind="toy",
        config={},
        checkpoint_every=4,
        log_every=2,
    )
    return model, trainer


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    model, trainer = _resumable_trainer(0, tmp_path / "a")
    trainer.fit(_step_fn(model))
    reference = [p.detach().clone() for p in model.parameters()]

    model, trainer = _resumable_trainer(0, tmp_path / "b")
    killing = _step_fn(model)

    def dies_at_step_9(step: int) -> dict[str, torch.Tensor]:
        if step == 9:
            raise _Killed
        return killing(step)

    with pytest.raises(_Killed):
        trainer.fit(dies_at_step_9)
    assert load_checkpoint(tmp_path / "b", kind="toy")["step"] == 8

    model, trainer = _resumable_trainer(123, tmp_path / "b")  # a fresh process: other init, resumed from disk
    assert trainer.start_step == 8
    trainer.fit(_step_fn(model))
    for got, want in zip(model.parameters(), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with open(tmp_path / "b" / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_training_lowers_the_loss_and_logs(tmp_path: Path) -> None:
    model, optimizer, _ = _problem()
    first = _step_fn(model)(0)["loss"].item()
    last = Trainer(
        model, optimizer, out_dir=tmp_path, steps=60, kind="toy", config={"a": 1}, log_every=10
    ).fit(_step_fn(model))
    assert last["loss"] < first / 4
    payload = load_checkpoint(tmp_path)
    assert payload["config"] == {"a": 1} and payload["step"] == 60


def test_a_run_with_other_options_is_refused_rather_than_resumed(tmp_path: Path) -> None:
    def trainer(config: dict, steps: int, may_change: tuple[str, ...] = ()) -> Trainer:
        model, optimizer, _ = _problem()
        return Trainer(
            model,
            optimizer,
            out_dir=tmp_path,
            steps=steps,
            kind="toy",
            config={**config, "steps": steps},
            resume_may_change=may_change,
        )

    first = trainer({"lr": 0.05}, 4)
    first.fit(_step_fn(first.model))
    with pytest.raises(QuickstudyError, match=r"another lr: lr=0.05, not 0.1; use another --out"):
        trainer({"lr": 0.1}, 4)
    with pytest.raises(QuickstudyError, match=r"another steps: steps=4, not 6;"):
        trainer({"lr": 0.05}, 6)
    assert trainer({"lr": 0.05}, 4).start_step == 4
    assert trainer({"lr": 0.05}, 6, may_change=("steps",)).start_step == 4


def test_custom_backward_is_used(tmp_path: Path) -> None:
    model, _, _ = _problem()
    calls: list[int] = []

    def backward(outputs: dict[str, torch.Tensor]) -> None:
        calls.append(1)
        (outputs["loss"] * 0).backward()

    before = [p.detach().clone() for p in model.parameters()]
    Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        out_dir=tmp_path,
        steps=3,
        kind="toy",
        config={},
        backward=backward,
    ).fit(_step_fn(model))
    assert len(calls) == 3
    for got, want in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(got, want)


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(QuickstudyError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(QuickstudyError, match=r"corrupt\.pt: not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(QuickstudyError, match="not a quickstudy checkpoint"):
        load_checkpoint(foreign)
    save_checkpoint(tmp_path / "ok.pt", {"kind": "detector"})
    with pytest.raises(QuickstudyError, match="'detector' checkpoint, expected 'fewshot'"):
        load_checkpoint(tmp_path / "ok.pt", kind="fewshot")
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temporary file"


def test_non_finite_loss_stops_training(tmp_path: Path) -> None:
    model, optimizer, _ = _problem()
    with pytest.raises(FloatingPointError, match="step 0"):
        Trainer(model, optimizer, out_dir=tmp_path, steps=2, kind="toy", config={}).fit(
            lambda step: {"loss": torch.tensor(float("nan"), requires_grad=True)}
        )


_DDP_SCRIPT = """
import json, os, sys, torch
from torch import nn
from quickstudy.train import Trainer, distributed, step_generator
distributed.init_from_env()
rank, world = distributed.rank(), distributed.world_size()
torch.manual_seed(0)
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
target = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
def step(s):
    x = torch.randn(16, 4, generator=step_generator(3, s))  # the global batch
    x = x[rank::world]  # this process's share
    return {"loss": nn.functional.mse_loss(model(x), x @ target)}
Trainer(model, opt, out_dir=sys.argv[1], steps=8, kind="toy", config={}, log_every=1).fit(step)
if rank == 0:
    print(json.dumps([p.detach().reshape(-1).tolist() for p in model.parameters()]))
if torch.distributed.is_initialized():
    torch.distributed.barrier()  # neither rank leaves while the other still uses gloo
    # gloo's threads can abort the interpreter's teardown under load ("terminate called without an
    # active exception"): the training is done and printed, so leave without tearing anything down
    sys.stdout.flush()
    os._exit(0)
"""


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    # --standalone: torchrun picks a free port itself (a fixed one can be taken on a shared machine)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    params_one = json.loads(single.stdout.strip().splitlines()[-1])
    params_two = json.loads(double.stdout.strip().splitlines()[-1])
    for a, b in zip(params_one, params_two, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6)
    with open(tmp_path / "one" / "metrics.csv") as f1, open(tmp_path / "two" / "metrics.csv") as f2:
        one = [float(r["loss"]) for r in csv.DictReader(f1)]
        two = [float(r["loss"]) for r in csv.DictReader(f2)]
    torch.testing.assert_close(torch.tensor(one), torch.tensor(two), rtol=1e-5, atol=1e-6)
