"""P6: Omniglot few-shot accuracy of ProtoNet and MAML at 5w1s, 5w5s, 20w1s, 20w5s (DESIGN.md).

    .venv/bin/python benchmarks/p6_omniglot.py --device cpu --protonet-steps 300 --maml-steps 40 --episodes 200
    .venv/bin/python benchmarks/p6_omniglot.py --device cuda --amp --max-minutes 0.6 --json-out p6.json

Meta-train on the Vinyals ``trainval`` classes (1200 characters x 4 rotations), evaluate on ``test``
(423 x 4) with ``--episodes`` episodes of 15 queries per class, mean accuracy and 95% CI.

Recipes as published: ProtoNet trains one model per shot (60-way episodes, 5 queries, Adam 1e-3
halved every 2000 episodes) and evaluates it at 5-way and 20-way; MAML trains one model per
configuration (5-way: meta-batch 32, inner lr 0.4, 1 step, 3 at test; 20-way: meta-batch 16, lr 0.1,
5 steps). The papers trained far longer (ProtoNet: until validation stalls, tens of thousands of
episodes; MAML: 60,000 meta-iterations); ``--protonet-steps``/``--maml-steps`` bound each run and
``--max-minutes`` stops a run early (at a chunk boundary) when its wall time is spent. Published:
ProtoNet 98.8 / 99.7 / 96.0 / 98.9, MAML 98.7 / 99.9 / 95.8 / 98.9 (5w1s / 5w5s / 20w1s / 20w5s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from quickstudy.data.classification import omniglot_classes
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.data.paths import data_root
from quickstudy.meta import FewShotConfig, build_learner, evaluate, paper_recipe, train_learner
from quickstudy.train import describe_device

PUBLISHED = {
    "protonet": {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9},
    "maml": {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9},
}


def parse_configs(text: str) -> list[tuple[int, int]]:
    configs = []
    for item in text.split(","):
        way, shot = item.strip().rstrip("s").split("w")
        configs.append((int(way), int(shot)))
    return configs


def train_run(
    config: FewShotConfig, train, out: Path, args: argparse.Namespace
) -> tuple[torch.nn.Module, float, int]:
    """Train in chunks (resuming from the checkpoint) until ``config.steps`` or ``--max-minutes``."""
    torch.manual_seed(config.seed)
    learner = build_learner(config)
    total, done, started = config.steps, 0, time.perf_counter()
    while done < total:
        done = min(total, done + args.chunk)
        train_learner(learner, dataclasses.replace(config, steps=done), train, out_dir=out, device=args.device,
                      amp=args.amp, log_every=max(1, args.chunk // 4), checkpoint_every=args.chunk)  # fmt: skip
        if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
            break
    return learner, time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder holding omniglot/ (default: $QUICKSTUDY_DATA, ./data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--algos", default="protonet,maml")
    parser.add_argument("--configs", default="5w1s,5w5s,20w1s,20w5s")
    parser.add_argument("--protonet-steps", type=int, default=20_000, help="episodes per ProtoNet run")
    parser.add_argument("--maml-steps", type=int, default=60_000, help="meta-iterations per MAML run")
    parser.add_argument(
        "--max-minutes", type=float, default=0, help="stop a run after this wall time (0: never)"
    )
    parser.add_argument("--chunk", type=int, default=100, help="steps between time checks (and checkpoints)")
    parser.add_argument("--protonet-train-way", type=int, default=60)
    parser.add_argument(
        "--maml-batch", type=int, help="override the MAML meta-batch (32 at 5-way, 16 at 20-way)"
    )
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", help="keep run folders here (default: a temporary folder)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = data_root(args.data_root) / "omniglot"
    train = omniglot_classes(root, "trainval").to(args.device)
    test = omniglot_classes(root, "test").to(args.device)
    configs = parse_configs(args.configs)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(args.out or scratch)
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
                learner, seconds, steps = train_run(config, train, runs / name, args)
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
                        "train_seconds": round(seconds, 1),
                        "eval_seconds": round(time.perf_counter() - t0, 1),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    device = describe_device(args.device)
    print(f"\n## P6 Omniglot — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device}\n")
    print(
        "| algo | test | accuracy % ± 95% CI | published | train steps (way, meta-batch) | train s | eval s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['algo']} | {r['way']}w{r['shot']}s | {r['accuracy']:.2f} ± {r['ci95']:.2f} | {r['published']} | "
              f"{r['train_steps']} ({r['train_way']}-way, {r['meta_batch']}) | {r['train_seconds']} | {r['eval_seconds']} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"device": device, "argv": sys.argv[1:], "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
