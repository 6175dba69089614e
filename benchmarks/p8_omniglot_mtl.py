"""P8 Omniglot multi-task: architectures with equal weighting, and weighting / combiner methods on the
shared trunk; mean test accuracy, Δm against single-task networks, time per step; one table, one seed.

Optionally, LibMTL's own implementations of some of the same methods (``--libmtl-path``, a folder
holding the ``LibMTL`` package, e.g. ``pip install --no-deps --target DIR libmtl``) run on the same
data, network and training loop as the anchor; LibMTL is never a dependency of quickstudy.

    .venv/bin/python benchmarks/p8_omniglot_mtl.py --tasks 10 --steps 100 --width 32 --batch-size 8

``--eval-every N`` adds a learning curve (test and train accuracy every N steps) and ``--plot`` draws it.
A grid too long for one process runs in parts, each with ``--json-out``, and a last call with
``--reuse`` of those files (same settings, checked) assembles them into one table and Δm; rows taken
from a file keep the time per step measured in their own run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from datetime import UTC, datetime
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
from quickstudy.train import describe_device

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
# Methods that need each task's gradient on the shared parameters: T backward passes through the trunk.
PER_TASK_GRADIENT_METHODS = ("gradnorm", *COMBINER_NAMES)
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
        "--gradient-method-steps",
        type=int,
        help="steps of the methods that backpropagate each task through the trunk (GradNorm, the "
        "combiners; ours and LibMTL's), about T times the cost of a step (default: --steps); "
        "fewer makes them timing rows only",
    )
    parser.add_argument("--out-dir", type=Path, help="keep run folders here (default: a temporary folder)")
    parser.add_argument("--json-out", type=Path, help="write all results as JSON")
    parser.add_argument(
        "--eval-every",
        type=int,
        help="also evaluate every N steps (test and train accuracy: a learning curve)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[],
        help="--json-out files of earlier runs with the same settings: their rows are taken, not rerun (a grid in parts)",
    )
    parser.add_argument("--plot", type=Path, help="save the accuracy-against-steps plot here (PNG)")
    args = parser.parse_args(argv)
    if min(args.steps, args.gradient_method_steps or args.steps) < 2:
        parser.error("--steps and --gradient-method-steps must be at least 2 (the first step is not timed)")
    if args.eval_every is not None and args.eval_every < 2:
        parser.error("--eval-every must be at least 2 (the first step after each evaluation is not timed)")
    torch.set_num_threads(args.threads)

    tasks = omniglot_mtl_tasks(data_root(args.data_root) / "omniglot", n_tasks=args.tasks)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="p8-"))
    names = list(dict.fromkeys(name for name in args.configs.split(",") if name))
    if "single/equal" in names:  # the baseline of Δm runs first
        names.remove("single/equal")
        names.insert(0, "single/equal")
    runs: list[tuple[str, MultiTaskConfig, Weighting | None, int]] = []
    gradient_method_steps = args.gradient_method_steps or args.steps
    for name in names:
        method_name = name.split("/")[1]
        steps = gradient_method_steps if method_name in PER_TASK_GRADIENT_METHODS else args.steps
        runs.append((name, parse_config(name), None, steps))
    if args.libmtl_path:
        weighting_module = import_libmtl_weighting(args.libmtl_path)
        for method in [m for m in args.libmtl_methods.split(",") if m]:
            cls_name, kwargs = LIBMTL_METHODS[method]
            libmtl = LibMTLWeighting(getattr(weighting_module, cls_name), len(tasks), kwargs, args.device)
            label = f"shared/{method} (LibMTL {cls_name})"
            steps = gradient_method_steps if method in PER_TASK_GRADIENT_METHODS else args.steps
            runs.append((label, MultiTaskConfig(arch="shared"), libmtl, steps))

    reused: dict[str, dict[str, Any]] = {}
    for path in args.reuse:
        for name, row in reusable_rows(path, args, [task.name for task in tasks]).items():
            if name in reused:
                parser.error(f"{path}: {name} is also in {reused[name]['reused_from']}; reuse it from one")
            reused[name] = row
    for name, _, _, steps in runs:
        if name in reused and reused[name]["steps"] != steps:
            parser.error(
                f"{reused[name]['reused_from']}: {name} ran {reused[name]['steps']} steps, now {steps}"
            )
    console = Console()
    console.print(
        f"P8 Omniglot MTL: {len(tasks)} tasks, {args.steps} steps, batch {args.batch_size}/task, "
        f"Conv-4 width {args.width}, seed {args.seed}, device {args.device}"
    )
    results: list[dict[str, Any]] = []
    baseline: list[float] | None = None
    load_at_start = os.getloadavg()

    def save_json() -> None:
        """Write the rows so far: after every row, so an interrupted grid keeps what it finished."""
        if not args.json_out:
            return
        payload = {
            "protocol": "P8",
            "device": describe_device(args.device),
            "torch": torch.__version__,
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average_1_5_15_min": {"start": load_at_start, "now": os.getloadavg()},
            "settings": {k: str(v) for k, v in vars(args).items() if k not in ("json_out",)},
            "tasks": [task.name for task in tasks],
            "results": results,
        }
        args.json_out.write_text(json.dumps(payload, indent=2))

    for name, config, method, steps in runs:
        if name in reused:
            row = reused[name]
            accuracies = list(row["accuracy"].values())
            if name == "single/equal":
                baseline = accuracies
            row["delta_m"] = delta_m(accuracies, baseline) if baseline is not None else None
            results.append(row)
            console.print(f"{name}: taken from {row['reused_from']}")
            continue
        config.steps, config.batch_size, config.width = steps, args.batch_size, args.width
        config.lr, config.seed = args.lr, args.seed
        run_dir = out_dir / name.replace("/", "-").replace(" ", "_").replace("(", "").replace(")", "")
        if run_dir.exists():  # a resumed run would time nothing
            parser.error(f"{run_dir} exists; give a fresh --out-dir")
        started = time.perf_counter()
        curve: list[dict[str, float]] = []
        timed_seconds, timed_steps = 0.0, 0
        # Each evaluation point trains on from the last one's checkpoint (the Trainer resumes exactly:
        # same batches, optimizer and weighting state), so a curve costs only its evaluations.
        for target in evaluation_steps(steps, args.eval_every):
            config.steps = target
            result = train_multitask(
                tasks,
                config,
                run_dir,
                device=args.device,
                checkpoint_every=target,
                log_every=max(1, steps // 10),
                method=method,
            )
            if result["seconds_per_step"] is not None:
                timed_seconds += result["seconds_per_step"] * (result["steps_run"] - 1)
                timed_steps += result["steps_run"] - 1
            curve.append(
                {
                    "step": target,
                    "mean_accuracy": result["mean_accuracy"],
                    "mean_train_accuracy": result["mean_train_accuracy"],
                }
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
            "mean_train_accuracy": result["mean_train_accuracy"],
            "seconds_per_step": timed_seconds / timed_steps,
            "seconds_total": time.perf_counter() - started,
            "load_average_1_min_at_end": os.getloadavg()[0],
            "accuracy": result["accuracy"],
            "curve": curve,
            "final_weights": result["final_weights"],
        }
        results.append(row)
        save_json()
        console.print(
            f"{name}: mean acc {row['mean_accuracy']:.4f} (train {row['mean_train_accuracy']:.4f}), "
            + (f"Δm {row['delta_m']:+.2f}%, " if row["delta_m"] is not None else "")
            + f"{1000 * row['seconds_per_step']:.1f} ms/step"
        )

    if reused:
        console.print("rows marked * are taken from --reuse files (same settings, timed in those runs)")
    table = Table(title=f"P8 Omniglot multi-task ({len(tasks)} tasks, {args.steps} steps, {args.device})")
    for column in ("config", "steps", "mean acc", "min acc", "train acc", "Δm %", "ms/step"):
        table.add_column(column)
    for row in results:
        table.add_row(
            row["config"] + (" *" if "reused_from" in row else ""),
            str(row["steps"]),
            f"{row['mean_accuracy']:.4f}",
            f"{row['min_accuracy']:.4f}",
            f"{row['mean_train_accuracy']:.4f}",
            f"{row['delta_m']:+.2f}" if row["delta_m"] is not None else "-",
            f"{1000 * row['seconds_per_step']:.1f}",
        )
    console.print(table)
    save_json()
    if args.plot:
        plot_curves(results, args.plot, f"P8 Omniglot multi-task, {len(tasks)} tasks ({args.device})")
    return 0


# Settings that change what a row measures: a row of another run is reused only if all are equal.
ROW_SETTINGS = (
    "device",
    "steps",
    "batch_size",
    "width",
    "lr",
    "seed",
    "threads",
    "eval_every",
)


def reusable_rows(path: Path, args: argparse.Namespace, task_names: list[str]) -> dict[str, dict[str, Any]]:
    """The rows of an earlier ``--json-out`` of this script, keyed by configuration, if that run had the
    same tasks and settings; :class:`SystemExit` naming the file and the difference otherwise."""
    try:
        earlier = json.loads(path.read_text())
        settings, rows = earlier["settings"], earlier["results"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{path}: not a --json-out of p8_omniglot_mtl.py ({error})") from None
    if earlier.get("tasks") != task_names:
        raise SystemExit(f"{path}: ran on other tasks than this run")
    now = vars(args)
    for key in ROW_SETTINGS:
        if settings.get(key) != str(now[key]):
            raise SystemExit(f"{path}: --{key.replace('_', '-')} was {settings.get(key)}, now {now[key]}")
    return {row["config"]: {**row, "reused_from": str(path)} for row in rows}


def evaluation_steps(steps: int, every: int | None) -> list[int]:
    """The steps after which a run is evaluated: every ``every`` steps and at the end.

    Example:
        >>> evaluation_steps(500, 200), evaluation_steps(500, None)
        ([200, 400, 500], [500])
    """
    if not every:
        return [steps]
    return [*range(every, steps, every), steps]


def plot_curves(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Mean test (solid) and train (dotted) accuracy against steps, one colour per configuration
    (rows evaluated once, such as short timing rows, have no curve and are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in [row for row in results if len(row["curve"]) > 1]:
        steps = [point["step"] for point in row["curve"]]
        (line,) = axes.plot(
            steps, [p["mean_accuracy"] for p in row["curve"]], marker="o", label=row["config"]
        )
        axes.plot(
            steps, [p["mean_train_accuracy"] for p in row["curve"]], linestyle=":", color=line.get_color()
        )
    axes.set(
        xlabel="training step", ylabel="mean accuracy over tasks (test solid, train dotted)", title=title
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
