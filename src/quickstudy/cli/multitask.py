"""``quickstudy multitask``: train and evaluate multi-task networks on the P8 Omniglot benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quickstudy.cli._common import add_amp, add_data_root, add_device, add_model, print_json, print_table
from quickstudy.data.paths import data_root
from quickstudy.errors import QuickstudyError
from quickstudy.multitask.architectures import ARCHITECTURES
from quickstudy.multitask.combiners import COMBINERS
from quickstudy.multitask.metrics import delta_m
from quickstudy.multitask.omniglot import ClassificationTask, omniglot_mtl_tasks
from quickstudy.multitask.training import (
    RESULTS_NAME,
    MultiTaskConfig,
    evaluate_tasks,
    load_multitask,
    train_multitask,
)
from quickstudy.multitask.weighting import WEIGHTINGS

BENCHMARKS = ("omniglot-mtl",)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "multitask",
        help="multi-task learning: shared, conditioned and expert networks, loss weighting, combiners",
        description="Train one network on many tasks and measure it against single-task networks (Δm).",
    )
    commands = parser.add_subparsers(dest="multitask_command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train an architecture with a weighting or gradient combiner",
        description="Train on the P8 benchmark (omniglot-mtl: the 30 alphabets of images_background are "
        "30 tasks; drawings 1-15 train, 16-20 test), then evaluate on the test drawings and write "
        "results.json beside checkpoint.pt. Rerunning into the same folder resumes. "
        "Train --arch single first: it is the baseline of Δm.",
    )
    train.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    add_data_root(train)
    train.add_argument("--arch", default="shared", choices=ARCHITECTURES, help="default: shared")
    train.add_argument(
        "--weighting",
        default="equal",
        choices=[w for w in WEIGHTINGS if w != "fixed"],
        help="loss weighting (default: equal)",
    )
    train.add_argument(
        "--combiner",
        default="none",
        choices=["none", *COMBINERS],
        help="gradient combiner on the shared parameters; with a --weighting other than equal it "
        "combines the weighted losses (default: none)",
    )
    train.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000)")
    train.add_argument("--batch-size", type=int, default=16, help="images per task per step (default 16)")
    train.add_argument("--width", type=int, default=64, help="Conv-4 filters per block (default 64)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument("--tasks", type=int, help="only the first N alphabets (quick runs; default all 30)")
    train.add_argument("--seed", type=int, default=0)
    add_device(train)
    add_amp(train)
    train.add_argument(
        "--out",
        required=True,
        help="run folder (checkpoint.pt, metrics.csv, results.json; it remembers the data)",
    )
    train.add_argument("--json", action="store_true", help="print the results as JSON")
    train.set_defaults(func=_train, check=check_train)

    evaluate = commands.add_parser(
        "eval",
        help="per-task accuracy, mean accuracy and Δm of a trained run",
        description="Evaluate a run folder's checkpoint on the test drawings. With --baseline (a run of "
        "--arch single on the same tasks), also Δm: the mean relative change of each task's "
        "accuracy against the baseline, in percent (LibMTL's definition); the baseline's stored "
        "results.json is used when present.",
    )
    add_model(evaluate, "run folder written by `multitask train`", old="DIR")
    evaluate.add_argument("--baseline", metavar="DIR", help="single-task run folder to compute Δm against")
    add_data_root(evaluate, remembered=True)
    add_device(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(func=_eval)

    parser.set_defaults(func=lambda _: parser.print_help() or 2)


def _tasks_named(root: Path, names: list[str]) -> list[ClassificationTask]:
    by_name = {task.name: task for task in omniglot_mtl_tasks(root)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise QuickstudyError(f"{root}: alphabets of the run not found: {', '.join(missing)}")
    return [by_name[name] for name in names]


def run_config(args: argparse.Namespace) -> MultiTaskConfig:
    """The config `multitask train` trains (tasks filled in by the library), remembering its data root."""
    return MultiTaskConfig(
        arch=args.arch,
        weighting=args.weighting,
        combiner=args.combiner,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        seed=args.seed,
        benchmark=args.benchmark,
        data_root=str(data_root(args.data_root).resolve()),
    )


def check_train(args: argparse.Namespace) -> None:
    run_config(args).check()
    if args.tasks is not None and args.tasks < 1:
        raise QuickstudyError(f"--tasks must be at least 1, got {args.tasks}")


def eval_data_root(args: argparse.Namespace, config: MultiTaskConfig) -> Path:
    """The data root `multitask eval` reads: --data-root where given, else the run's."""
    return data_root(args.data_root or config.data_root or None)


def _train(args: argparse.Namespace) -> int:
    config = run_config(args)
    tasks = omniglot_mtl_tasks(Path(config.data_root) / "omniglot", n_tasks=args.tasks)
    results = train_multitask(tasks, config, args.out, device=args.device, amp=args.amp)
    if args.json:
        print_json(results)
    else:
        timing = f", {results['seconds_per_step']:.3f} s/step" if results["seconds_per_step"] else ""
        print(
            f"{len(tasks)} tasks, mean test accuracy {results['mean_accuracy']:.4f}{timing}; "
            f"results: {Path(args.out) / RESULTS_NAME}"
        )
    return 0


def _baseline_accuracy(run: Path, names: list[str], root: Path, device: str) -> list[float]:
    stored = run / RESULTS_NAME
    if stored.exists():
        try:
            accuracy = json.loads(stored.read_text())["accuracy"]
        except (ValueError, KeyError, TypeError):
            raise QuickstudyError(f"{stored}: not a results file of `multitask train`") from None
    else:
        network, config = load_multitask(run, device)
        accuracy = dict(
            zip(
                config.task_names, evaluate_tasks(network, _tasks_named(root, config.task_names)), strict=True
            )
        )
    missing = [name for name in names if name not in accuracy]
    if missing:
        raise QuickstudyError(f"{run}: baseline has no result for {', '.join(missing)}")
    return [float(accuracy[name]) for name in names]


def _eval(args: argparse.Namespace) -> int:
    network, config = load_multitask(args.model, args.device)
    root = eval_data_root(args, config) / "omniglot"
    accuracies = evaluate_tasks(network, [t.to(args.device) for t in _tasks_named(root, config.task_names)])
    baseline = (
        _baseline_accuracy(Path(args.baseline), config.task_names, root, args.device)
        if args.baseline
        else None
    )
    summary: dict[str, Any] = {
        "model": args.model,
        "arch": config.arch,
        "weighting": config.weighting,
        "combiner": config.combiner,
        "accuracy": dict(zip(config.task_names, accuracies, strict=True)),
        "mean_accuracy": sum(accuracies) / len(accuracies),
        "delta_m": delta_m(accuracies, baseline) if baseline is not None else None,
    }
    if args.json:
        print_json(summary)
        return 0
    rows = [
        [name, f"{acc:.4f}", f"{baseline[i]:.4f}" if baseline else "-"]
        for i, (name, acc) in enumerate(zip(config.task_names, accuracies, strict=True))
    ]
    print_table(
        f"{args.model}: {config.arch}, {config.method}",
        ["task", "accuracy", "baseline"],
        rows,
    )
    line = f"mean accuracy {summary['mean_accuracy']:.4f}"
    if summary["delta_m"] is not None:
        line += f", Δm {summary['delta_m']:+.2f}%"
    print(line)
    return 0
