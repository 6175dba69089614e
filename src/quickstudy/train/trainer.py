"""The training loop every learner shares: AMP, gradient averaging, checkpoints, resume, logs, progress.

A model's own code says what one step computes (``step_fn``); the :class:`Trainer` does the rest.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from quickstudy.train import distributed
from quickstudy.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from quickstudy.train.resume import check_resumable

StepFn = Callable[[int], dict[str, torch.Tensor]]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator whose stream is a pure function of ``(seed, step, rank)``.

    Drawing every batch from it makes a resumed run see exactly the batches of an uninterrupted one.
    """
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + step) * 1_009 + rank)
    return generator


class Trainer:
    """Run ``steps`` optimisation steps of ``step_fn``, resuming from ``out_dir/checkpoint.pt`` if present.

    >>> def step_fn(step):  # doctest: +SKIP
    ...     x, y = batch(step_generator(0, step))
    ...     logits = model(x)
    ...     return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}
    >>> trainer = Trainer(  # doctest: +SKIP
    ...     model, optimizer, out_dir="runs/a", steps=1000, kind="fewshot", config={}
    ... )
    >>> trainer.fit(step_fn)  # doctest: +SKIP

    ``backward(outputs)`` replaces ``outputs["loss"].backward()`` (e.g. a multi-task weighting method).
    ``extra_state()`` returns more things to save; they come back in :attr:`resumed_extra_state`.
    A checkpoint is resumed only by a run with the same ``config``, but for the options named in
    ``resume_may_change`` (:func:`~quickstudy.train.resume.check_resumable`).
    Under torchrun, gradients are averaged across processes and only rank 0 writes files or shows progress.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        out_dir: str | os.PathLike[str],
        steps: int,
        kind: str,
        config: dict[str, Any],
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        grad_clip: float | None = None,
        checkpoint_every: int = 500,
        log_every: int = 50,
        desc: str = "train",
        backward: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        resume_may_change: Collection[str] = (),
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.out_dir = Path(out_dir)
        self.steps = steps
        self.kind = kind
        self.config = config
        self.device = torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        self.grad_clip = grad_clip
        self.checkpoint_every = max(1, checkpoint_every)
        self.log_every = max(1, log_every)
        self.desc = desc
        self.backward = backward or (lambda outputs: outputs["loss"].backward())
        self.extra_state = extra_state
        self.resume_may_change = tuple(resume_may_change)
        self.start_step = 0
        self.resumed_extra_state: dict[str, Any] = {}
        self._resume()

    @property
    def checkpoint_file(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def _resume(self) -> None:
        if not self.checkpoint_file.exists():
            return
        payload = load_checkpoint(self.checkpoint_file, kind=self.kind, map_location=self.device)
        check_resumable(self.checkpoint_file, payload.get("config", {}), self.config, self.resume_may_change)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload.get("scheduler") is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"].cpu())  # map_location may have moved it to the GPU
        self.start_step = int(payload["step"])
        self.resumed_extra_state = payload.get("extra", {})

    def state(self, step: int) -> dict[str, Any]:
        """Everything a resumed run needs, plus the config that describes the model."""
        return {
            "kind": self.kind,
            "config": self.config,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": torch.get_rng_state(),
            "extra": self.extra_state() if self.extra_state is not None else {},
        }

    def save(self, step: int) -> None:
        if distributed.is_main():
            save_checkpoint(self.checkpoint_file, self.state(step))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fit(self, step_fn: StepFn) -> dict[str, float]:
        """Train from the resumed step to ``steps``; return the running means of the last log window."""
        main = distributed.is_main()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        log = _MetricsLog(self.out_dir / "metrics.csv", self.start_step) if main else None
        window: dict[str, float] = {}
        window_count = 0
        last: dict[str, float] = {}
        progress = Progress(
            TextColumn(f"[bold]{self.desc}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            disable=not main,
            transient=False,
        )
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.model.train()
        started = time.perf_counter()
        with progress:
            task = progress.add_task(
                self.desc, total=self.steps, completed=self.start_step, rate="", metrics=""
            )
            for step in range(self.start_step, self.steps):
                self.optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    outputs = step_fn(step)
                loss = outputs["loss"]
                if not torch.isfinite(loss.detach()):
                    raise FloatingPointError(f"loss became {loss.item()} at step {step}")
                self.backward(outputs)
                distributed.average_gradients(params)
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                for name, value in outputs.items():
                    if value.dim() == 0:
                        window[name] = window.get(name, 0.0) + float(value.detach())
                window_count += 1
                done = step + 1
                if done % self.log_every == 0 or done == self.steps:
                    last = {
                        name: distributed.mean_across_processes(total / window_count)
                        for name, total in window.items()
                    }
                    window, window_count = {}, 0
                    if log is not None:
                        log.write(done, last)
                    rate = (done - self.start_step) / max(time.perf_counter() - started, 1e-9)
                    shown = " ".join(f"{k}={v:.4g}" for k, v in last.items() if math.isfinite(v))
                    progress.update(task, rate=f"{rate:.2f} steps/s", metrics=shown)
                progress.update(task, completed=done)
                if done % self.checkpoint_every == 0 or done == self.steps:
                    self.save(done)
        if self.start_step >= self.steps and not self.checkpoint_file.exists():
            self.save(self.steps)
        return last


class _MetricsLog:
    """``metrics.csv``: one row per log window; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = path
        self.columns: list[str] | None = None
        rows: list[dict[str, str]] = []
        if path.exists() and start_step > 0:
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or []) or None
                rows = [row for row in reader if int(row["step"]) <= start_step]
        with open(path, "w", newline="") as handle:
            if self.columns:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["step", *metrics]
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(
                {"step": step, **metrics}
            )
