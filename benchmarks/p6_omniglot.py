"""P6: Omniglot few-shot accuracy of ProtoNet and MAML at 5w1s, 5w5s, 20w1s, 20w5s (DESIGN.md).

Full recipes (a GPU; ``--max-minutes`` caps each run's training time, the same ``--out`` continues it):

    .venv/bin/python benchmarks/p6_omniglot.py --device cuda --amp --algos protonet --protonet-steps 20000 \
        --chunk 1000 --curve-episodes 200 --out runs/p6 --json-out p6-protonet.json --plot p6-protonet.png
    .venv/bin/python benchmarks/p6_omniglot.py --device cuda --amp --algos maml --maml-steps 60000 \
        --chunk 1000 --curve-episodes 200 --max-minutes 3 --out runs/p6 --json-out p6-maml.json --plot p6-maml.png

The partial CPU variant recorded in ``results/meta.md`` (one thread; a learning curve point every
chunk; a later invocation with more steps and the same ``--out`` continues a run):

    .venv/bin/python benchmarks/p6_omniglot.py --device cpu --threads 1 --algos protonet --configs 5w1s,20w1s \
        --protonet-steps 400 --chunk 50 --curve-episodes 100 --out runs/p6 --json-out p6-protonet-1s.json
    .venv/bin/python benchmarks/p6_omniglot.py --device cpu --threads 1 --algos protonet --configs 5w5s,20w5s \
        --protonet-steps 150 --chunk 50 --curve-episodes 100 --out runs/p6 --json-out p6-protonet-5s.json
    .venv/bin/python benchmarks/p6_omniglot.py --device cpu --threads 1 --algos maml --configs 5w1s \
        --maml-steps 90 --chunk 30 --curve-episodes 100 --out runs/p6 --json-out p6-maml.json
    .venv/bin/python benchmarks/p6_omniglot.py --device cpu --threads 1 --algos fomaml --configs 5w1s \
        --maml-steps 75 --chunk 75 --curve-episodes 100 --out runs/p6 --json-out p6-fomaml.json
    .venv/bin/python benchmarks/p6_omniglot.py --curves-from p6-protonet-1s.json p6-protonet-5s.json \
        p6-maml.json p6-fomaml.json --plot p6_cpu_curves.png

Meta-train on the Vinyals ``trainval`` classes (1200 characters x 4 rotations), evaluate on ``test``
(423 x 4) with ``--episodes`` episodes of 15 queries per class (seed 0), mean accuracy and 95% CI.

Recipes as published: ProtoNet trains one model per shot (60-way episodes, 5 queries, Adam 1e-3
halved every 2000 episodes) and evaluates it at 5-way and 20-way; MAML and first-order MAML train
one model per configuration (5-way: meta-batch 32, inner lr 0.4, 1 step, 3 at test; 20-way:
meta-batch 16, lr 0.1, 5 steps). The papers trained far longer (ProtoNet: until validation stalls,
tens of thousands of episodes; MAML: 60,000 meta-iterations); ``--protonet-steps``/``--maml-steps``
bound each run and ``--max-minutes`` stops a run at the first chunk boundary after that much
training time. Published: ProtoNet 98.8 / 99.7 / 96.0 / 98.9, MAML 98.7 / 99.9 / 95.8 / 98.9,
first-order MAML 98.3 / 99.2 / 89.4 / 97.9 (5w1s / 5w5s / 20w1s / 20w5s).

``--curve-episodes N`` draws a learning curve: after every chunk, N test-split episodes (seed 1,
5 queries per class, at the run's largest test way) score the model as it stands. The curve only
shows where training was heading; nothing is selected with it (the reported model is the last
step), and its time is not counted as training time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # benchmarks run on servers without a display

import matplotlib.pyplot as plt
import torch

from quickstudy.data.classification import ImageClassSet, omniglot_classes
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.data.paths import data_root
from quickstudy.meta import FewShotConfig, build_learner, evaluate, paper_recipe, train_learner
from quickstudy.train import describe_device, load_checkpoint

PUBLISHED = {  # Snell et al. 2017, Table 1; Finn et al. 2017, Table 1
    "protonet": {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9},
    "maml": {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9},
    "fomaml": {(5, 1): 98.3, (5, 5): 99.2, (20, 1): 89.4, (20, 5): 97.9},
}
CURVE_SEED, CURVE_QUERY = 1, 5  # other episodes than the final evaluation's (seed 0, 15 queries)


def parse_configs(text: str) -> list[tuple[int, int]]:
    configs = []
    for item in text.split(","):
        way, shot = item.strip().rstrip("s").split("w")
        configs.append((int(way), int(shot)))
    return configs


def train_run(
    config: FewShotConfig,
    train: ImageClassSet,
    curve_set: EpisodeSampler | None,
    out: Path,
    args: argparse.Namespace,
) -> tuple[torch.nn.Module, dict[str, float], int, list[dict[str, float]]]:
    """Train in chunks until ``config.steps`` or ``--max-minutes`` of training (this invocation's).

    A run folder that holds a checkpoint is continued from it: ``out/p6_run.json`` carries the
    training time and the learning curve so far, so a run stopped by a time budget can be taken
    further by a later invocation with a larger ``--max-minutes`` or step count. Returns the
    learner, its training time (``wall_seconds`` in all, ``cpu_seconds`` of this process's
    training, ``cpu_steps`` the steps they paid for), the steps reached and the curve.
    """
    torch.manual_seed(config.seed)
    learner = build_learner(config)
    record = out / "p6_run.json"
    state = json.loads(record.read_text()) if record.exists() else {"wall_seconds": 0.0, "curve": []}
    checkpoint = out / "checkpoint.pt"
    done = int(load_checkpoint(checkpoint)["step"]) if checkpoint.exists() else 0
    first, cpu, spent = done, 0.0, 0.0
    while True:
        done = min(config.steps, done + args.chunk)
        wall, cpu_start = time.perf_counter(), time.process_time()
        train_learner(learner, dataclasses.replace(config, steps=done), train, out_dir=out, device=args.device,
                      amp=args.amp, log_every=max(1, args.chunk // 4), checkpoint_every=args.chunk)  # fmt: skip
        cpu += time.process_time() - cpu_start
        chunk_seconds = time.perf_counter() - wall
        spent += chunk_seconds
        state["wall_seconds"] += chunk_seconds
        if curve_set is not None and (not state["curve"] or state["curve"][-1]["step"] < done):
            report = evaluate(
                learner, curve_set, episodes=args.curve_episodes, seed=CURVE_SEED, device=args.device
            )
            point = {"step": done, "train_seconds": round(state["wall_seconds"], 1),
                     "accuracy": 100 * report.accuracy, "ci95": 100 * report.ci95}  # fmt: skip
            state["curve"].append(point)
            print(
                json.dumps({"curve": f"{config.algo} {config.train_way}w{config.shot}s", **point}), flush=True
            )
        record.write_text(json.dumps(state))
        if done >= config.steps or (args.max_minutes and spent > 60 * args.max_minutes):
            break
    seconds = {"wall_seconds": state["wall_seconds"], "cpu_seconds": cpu, "cpu_steps": done - first}
    return learner, seconds, done, state["curve"]


def plot_curves(runs: list[dict], path: str, title: str) -> None:
    """Curve accuracy against training steps and against training seconds, one line per run."""
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in runs:
        steps = [p["step"] for p in run["curve"]]
        seconds = [p["train_seconds"] for p in run["curve"]]
        accuracy = [p["accuracy"] for p in run["curve"]]
        ci = [p["ci95"] for p in run["curve"]]
        for axis, x in ((by_step, steps), (by_time, seconds)):
            axis.errorbar(x, accuracy, yerr=ci, marker="o", capsize=2, label=run["label"])
            if run["published"] is not None:
                axis.axhline(
                    run["published"], linestyle="--", linewidth=0.8, color=axis.lines[-1].get_color()
                )
    by_step.set_xlabel("meta-training steps (ProtoNet: episodes; MAML: meta-iterations)")
    by_time.set_xlabel("training wall seconds (they depend on the machine's load)")
    by_step.set_ylabel("test accuracy % (dashed: published)")
    by_step.legend(fontsize=8)
    for axis in (by_step, by_time):
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def combined_curves(files: list[str]) -> tuple[list[dict], str]:
    """The runs recorded in several ``--json-out`` files (by label, the last file's wins) and a title."""
    runs: dict[str, dict] = {}
    titles = []
    for file in files:
        try:
            summary = json.loads(Path(file).read_text())
            titles.append(f"{summary['time']}, {summary['load']}")
            runs |= {run["label"]: run for run in summary["curves"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(
                f"error: {file}: not a p6_omniglot.py --json-out file with curves ({error})"
            ) from None
    device = json.loads(Path(files[0]).read_text())["device"]
    return list(runs.values()), f"P6 Omniglot learning curves, {device}\n" + "\n".join(titles)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder holding omniglot/ (default: $QUICKSTUDY_DATA, ./data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--algos", default="protonet,maml", help="protonet, maml, fomaml (comma-separated)")
    parser.add_argument("--configs", default="5w1s,5w5s,20w1s,20w5s")
    parser.add_argument("--protonet-steps", type=int, default=20_000, help="episodes per ProtoNet run")
    parser.add_argument("--maml-steps", type=int, default=60_000, help="meta-iterations per (FO)MAML run")
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="stop a run after this much training time (0: never)"
    )
    parser.add_argument(
        "--chunk", type=int, default=100, help="steps between time checks, checkpoints, curve points"
    )
    parser.add_argument(
        "--curve-episodes", type=int, default=0, help="test episodes per curve point (0: no curve)"
    )
    parser.add_argument("--protonet-train-way", type=int, default=60)
    parser.add_argument(
        "--maml-batch", type=int, help="override the MAML meta-batch (32 at 5-way, 16 at 20-way)"
    )
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", help="keep run folders here (default: a temporary folder)")
    parser.add_argument("--json-out")
    parser.add_argument("--plot", help="write the learning curves to this PNG (needs --curve-episodes)")
    parser.add_argument(
        "--curves-from",
        nargs="+",
        metavar="JSON",
        help="only plot: draw the curves of these --json-out files into --plot (a later file's run replaces "
        "an earlier one of the same name: a continued run)",
    )
    args = parser.parse_args()
    if args.curves_from:
        if not args.plot:
            parser.error("--curves-from needs --plot")
        runs, title = combined_curves(args.curves_from)
        plot_curves(runs, args.plot, title)
        return 0
    if args.plot and not args.curve_episodes:
        parser.error("--plot needs --curve-episodes")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = data_root(args.data_root) / "omniglot"
    train = omniglot_classes(root, "trainval").to(args.device)
    test = omniglot_classes(root, "test").to(args.device)
    configs = parse_configs(args.configs)
    started_at, load_before = datetime.now(UTC), os.getloadavg()
    results, runs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        for algo in args.algos.split(","):
            # ProtoNet: one model per shot, tested at every way; MAML: one model per (way, shot).
            groups = (
                {
                    (None, shot): [c for c in configs if c[1] == shot]
                    for shot in sorted({s for _, s in configs})
                }
                if algo == "protonet"
                else {c: [c] for c in configs}
            )
            for (way, shot), tests in groups.items():
                recipe = paper_recipe(algo, way or 5, shot)
                if algo == "protonet":
                    recipe |= {"steps": args.protonet_steps, "train_way": args.protonet_train_way}
                else:
                    recipe |= {"steps": args.maml_steps}
                    if args.maml_batch:
                        recipe["meta_batch"] = args.maml_batch
                config = FewShotConfig(algo=algo, shot=shot, dataset="omniglot", **recipe)
                name = f"{algo}-{config.train_way}w{shot}s"
                curve_way = max(w for w, _ in tests)
                curve_set = (
                    EpisodeSampler(test, way=curve_way, shot=shot, query=CURVE_QUERY)
                    if args.curve_episodes
                    else None
                )
                learner, seconds, steps, curve = train_run(config, train, curve_set, folder / name, args)
                runs.append({"label": f"{name}, tested {curve_way}w{shot}s", "curve": curve,
                             "published": PUBLISHED.get(algo, {}).get((curve_way, shot))})  # fmt: skip
                for test_way, test_shot in tests:
                    sampler = EpisodeSampler(test, way=test_way, shot=test_shot, query=15)
                    t0 = time.perf_counter()
                    report = evaluate(learner, sampler, episodes=args.episodes, device=args.device)
                    row = {
                        "algo": algo,
                        "way": test_way,
                        "shot": test_shot,
                        "accuracy": 100 * report.accuracy,
                        "ci95": 100 * report.ci95,
                        "episodes": report.episodes,
                        "published": PUBLISHED.get(algo, {}).get((test_way, test_shot)),
                        "train_steps": steps,
                        "train_way": config.train_way,
                        "meta_batch": config.meta_batch,
                        "train_seconds": round(seconds["wall_seconds"], 1),
                        "train_cpu_seconds_per_step": round(
                            seconds["cpu_seconds"] / max(1, seconds["cpu_steps"]), 3
                        ),
                        "eval_seconds": round(time.perf_counter() - t0, 1),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    device = describe_device(args.device)
    load = f"load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    stamp = f"{started_at:%Y-%m-%d %H:%M}–{datetime.now(UTC):%H:%M} UTC"
    print(f"\n## P6 Omniglot — {stamp}, {device}, {load}\n")
    print(
        "| algo | test | accuracy % ± 95% CI | published | train steps (way, meta-batch) | train s | CPU s/step | eval s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['algo']} | {r['way']}w{r['shot']}s | {r['accuracy']:.2f} ± {r['ci95']:.2f} | {r['published']} | "
              f"{r['train_steps']} ({r['train_way']}-way, {r['meta_batch']}) | {r['train_seconds']} | {r['train_cpu_seconds_per_step']} | {r['eval_seconds']} |")  # fmt: skip
    if args.plot:
        plot_curves(runs, args.plot, f"P6 Omniglot learning curves — {stamp}, {device}, {load}")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            summary = {"device": device, "threads": torch.get_num_threads(), "time": stamp, "load": load,
                       "argv": sys.argv[1:], "results": results, "curves": runs}  # fmt: skip
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
