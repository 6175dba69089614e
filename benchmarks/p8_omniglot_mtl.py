"""P8 Omniglot multi-task: architectures with equal weighting, and weighting / combiner methods on the
shared trunk; mean test accuracy, Δm against single-task networks, time per step; one table, one seed.

Optionally, LibMTL's own implementations of some of the same methods (``--libmtl-path``, a folder
holding the ``LibMTL`` package, e.g. ``pip install --no-deps --target DIR libmtl``) run on the same
data, network and training loop as the anchor; LibMTL is never a dependency of quickstudy.

    .venv/bin/python benchmarks/p8_omniglot_mtl.py --tasks 10 --steps 100 --width 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from quickstudy.data.paths import data_root
from quickstudy.multitask.metrics import delta_m
from quickstudy.multitask.omniglot import omniglot_mtl_tasks
from quickstudy.multitask.training import MultiTaskConfig, train_multitask
from quickstudy.multitask.weighting import Weighting

CONFIGS = [
    "single/equal",
    "shared/equal",
    "concat/equal",
    "film/equal",
    "mmoe/equal",
    "shared/uncertainty",
    "shared/gradnorm",
    "shared/dwa",
    "shared/pcgrad",
    "shared/cagrad",
    "shared/mgda",
]
COMBINER_NAMES = ("pcgrad", "cagrad", "mgda")
# LibMTL class name and the keyword arguments its backward needs (LibMTL's defaults).
LIBMTL_METHODS = {
    "pcgrad": ("PCGrad", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "uncertainty": ("UW", {}),
    "gradnorm": ("GradNorm", {"alpha": 1.5}),
}


def import_libmtl_weighting(path: Path) -> types.ModuleType:
    """``LibMTL.weighting`` without ``LibMTL/__init__``, which imports model code that recent
    torchvision no longer supports (``torchvision.models.utils``)."""
    package = types.ModuleType("LibMTL")
    package.__path__ = [str(path / "LibMTL")]
    sys.modules["LibMTL"] = package
    return importlib.import_module("LibMTL.weighting")


class LibMTLWeighting(Weighting):
    """LibMTL's ``AbsWeighting`` subclass behind our interface (``rep_grad=False``: gradients on the
    shared parameters, computed LibMTL's way, one ``backward`` per task)."""

    def __init__(self, cls: type, n_tasks: int, kwargs: dict[str, Any], device: str) -> None:
        super().__init__(n_tasks)
        self.inner = cls()
        self.inner.task_num = n_tasks
        self.inner.device = torch.device(device)
        self.inner.rep_grad = False
        self.inner.epoch = 1  # GradNorm: active from the start, against the first step's losses
        self.inner.train_loss_buffer = np.full((n_tasks, 1), np.nan)
        self.inner.init_param()
        self.kwargs = kwargs

    def backward(
        self, losses: Sequence[torch.Tensor], shared_parameters: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        shared = list(shared_parameters)
        self.inner.get_share_params = lambda: shared

        def zero_grad_share_params() -> None:  # LibMTL's encoder.zero_grad(set_to_none=False)
            for p in shared:
                if p.grad is not None:
                    p.grad.zero_()

        self.inner.zero_grad_share_params = zero_grad_share_params
        if np.isnan(self.inner.train_loss_buffer).any():
            self.inner.train_loss_buffer[:, 0] = [float(loss.detach()) for loss in losses]
        weights = self.inner.backward(torch.stack(list(losses)), **self.kwargs)
        return torch.as_tensor(np.asarray(weights, dtype=np.float32))


def parse_config(text: str) -> MultiTaskConfig:
    arch, method = text.split("/")
    if method in COMBINER_NAMES:
        return MultiTaskConfig(arch=arch, combiner=method)
    return MultiTaskConfig(arch=arch, weighting=method)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", help="folder holding omniglot/ (default: $QUICKSTUDY_DATA, else ./data)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", type=int, help="first N alphabets (default: all 30, as P8 says)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="images per task per step")
    parser.add_argument("--width", type=int, default=64, help="Conv-4 filters per block")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (more contend on a busy CPU)"
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated arch/method (single/equal comes first)"
    )
    parser.add_argument("--libmtl-path", type=Path, help="folder holding the LibMTL package (anchor runs)")
    parser.add_argument(
        "--libmtl-methods", default=",".join(LIBMTL_METHODS), help=f"of {', '.join(LIBMTL_METHODS)}"
    )
    parser.add_argument(
        "--libmtl-steps",
        type=int,
        help="steps of the LibMTL runs (default: --steps); fewer makes them timing anchors only",
    )
    parser.add_argument("--out-dir", type=Path, help="keep run folders here (default: a temporary folder)")
    parser.add_argument("--json-out", type=Path, help="write all results as JSON")
    args = parser.parse_args(argv)
    if min(args.steps, args.libmtl_steps or args.steps) < 2:
        parser.error("--steps and --libmtl-steps must be at least 2 (the first step is not timed)")
    torch.set_num_threads(args.threads)

    tasks = omniglot_mtl_tasks(data_root(args.data_root) / "omniglot", n_tasks=args.tasks)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="p8-"))
    names = list(dict.fromkeys(name for name in args.configs.split(",") if name))
    if "single/equal" in names:  # the baseline of Δm runs first
        names.remove("single/equal")
        names.insert(0, "single/equal")
    runs: list[tuple[str, MultiTaskConfig, Weighting | None, int]] = []
    for name in names:
        runs.append((name, parse_config(name), None, args.steps))
    if args.libmtl_path:
        weighting_module = import_libmtl_weighting(args.libmtl_path)
        for method in [m for m in args.libmtl_methods.split(",") if m]:
            cls_name, kwargs = LIBMTL_METHODS[method]
            libmtl = LibMTLWeighting(getattr(weighting_module, cls_name), len(tasks), kwargs, args.device)
            label = f"shared/{method} (LibMTL {cls_name})"
            runs.append((label, MultiTaskConfig(arch="shared"), libmtl, args.libmtl_steps or args.steps))

    console = Console()
    console.print(
        f"P8 Omniglot MTL: {len(tasks)} tasks, {args.steps} steps, batch {args.batch_size}/task, "
        f"Conv-4 width {args.width}, seed {args.seed}, device {args.device}"
    )
    results: list[dict[str, Any]] = []
    baseline: list[float] | None = None
    for name, config, method, steps in runs:
        config.steps, config.batch_size, config.width = steps, args.batch_size, args.width
        config.lr, config.seed = args.lr, args.seed
        run_dir = out_dir / name.replace("/", "-").replace(" ", "_").replace("(", "").replace(")", "")
        if run_dir.exists():  # a resumed run would time nothing
            parser.error(f"{run_dir} exists; give a fresh --out-dir")
        started = time.perf_counter()
        result = train_multitask(
            tasks,
            config,
            run_dir,
            device=args.device,
            checkpoint_every=steps,
            log_every=max(1, steps // 10),
            method=method,
        )
        accuracies = list(result["accuracy"].values())
        if name == "single/equal":
            baseline = accuracies
        row = {
            "config": name,
            "steps": steps,
            "mean_accuracy": result["mean_accuracy"],
            "min_accuracy": min(accuracies),
            "delta_m": delta_m(accuracies, baseline) if baseline is not None else None,
            "seconds_per_step": result["seconds_per_step"],
            "seconds_total": time.perf_counter() - started,
            "accuracy": result["accuracy"],
            "final_weights": result["final_weights"],
        }
        results.append(row)
        console.print(
            f"{name}: mean acc {row['mean_accuracy']:.4f}, "
            + (f"Δm {row['delta_m']:+.2f}%, " if row["delta_m"] is not None else "")
            + f"{1000 * row['seconds_per_step']:.1f} ms/step"
        )

    table = Table(title=f"P8 Omniglot multi-task ({len(tasks)} tasks, {args.steps} steps, {args.device})")
    for column in ("config", "steps", "mean acc", "min acc", "Δm %", "ms/step"):
        table.add_column(column)
    for row in results:
        table.add_row(
            row["config"],
            str(row["steps"]),
            f"{row['mean_accuracy']:.4f}",
            f"{row['min_accuracy']:.4f}",
            f"{row['delta_m']:+.2f}" if row["delta_m"] is not None else "-",
            f"{1000 * row['seconds_per_step']:.1f}",
        )
    console.print(table)
    if args.json_out:
        payload = {
            "protocol": "P8",
            "device": args.device,
            "torch": torch.__version__,
            "settings": {k: str(v) for k, v in vars(args).items() if k not in ("json_out",)},
            "tasks": [task.name for task in tasks],
            "results": results,
        }
        args.json_out.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
