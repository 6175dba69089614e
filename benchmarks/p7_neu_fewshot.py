"""P7: NEU few-shot recognition at image level — meta-train on the four BASE classes only, then 6-way
K-shot episodes (K = 1, 5) with supports from TRAIN and queries from TEST (DESIGN.md).

    .venv/bin/python benchmarks/p7_neu_fewshot.py --device cpu --image-size 64 --steps 300 --episodes 1000
    .venv/bin/python benchmarks/p7_neu_fewshot.py --device cuda --amp --image-size 84 --steps 3000 --json-out p7.json
    # P7-u: start from a backbone pretrained without labels on all TRAIN images (quickstudy pretrain)
    .venv/bin/python benchmarks/p7_neu_fewshot.py --init runs/simclr --backbone conv4 --image-size 64 ...

Reports, per learner and K: accuracy over all queries and over the novel-class queries
(pitted_surface, scratches) with 95% CIs over ``--episodes`` episodes, and precision/recall of
every class pooled over all queries. ProtoNet trains one model per K (4-way episodes, K shots,
``--query`` queries); the fine-tuning baseline trains once (all four base classes per batch) and
fits a cosine head per episode. MAML-family learners are not run: their output layer is fixed at
the training way, and BASE has four classes while the test is 6-way. ``--transductive N`` adds N rounds
of soft k-means prototype refinement with the episode's unlabelled queries (P7-u, ProtoNet only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from quickstudy.data.classification import fewshot_sets
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.data.paths import data_root
from quickstudy.meta import FewShotConfig, ProtoNet, build_learner, evaluate, paper_recipe, train_learner
from quickstudy.train import describe_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder holding neu-det/ (default: $QUICKSTUDY_DATA, ./data)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--algos", default="protonet,finetune", help="protonet, finetune, mann")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--backbone", default="conv4")
    parser.add_argument("--width", type=int, help="conv4 filters per block (default 64)")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--steps", type=int, default=2000, help="meta-training steps per run")
    parser.add_argument("--query", type=int, default=15, help="queries per class, training and test")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init", help="pretrained backbone (run folder or checkpoint): P7-u")
    parser.add_argument("--transductive", type=int, default=0, help="ProtoNet: soft k-means rounds at test")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", help="keep run folders here (default: a temporary folder)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sets = fewshot_sets("neu", data_root(args.data_root), args.image_size)
    print(f"decoded NEU-DET at {args.image_size} px in {time.perf_counter() - started:.0f} s", flush=True)
    train = sets.train.to(args.device)
    support, query = sets.test_support.to(args.device), sets.test_query
    assert query is not None
    query = query.to(args.device)
    shots = [int(s) for s in args.shots.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(args.out or scratch)
        for algo in args.algos.split(","):
            # finetune's training does not depend on K: one run serves every K
            for train_shot in [shots[-1]] if algo == "finetune" else shots:
                recipe = paper_recipe(algo, 6, train_shot) | {
                    "train_way": len(train.classes),
                    "query": args.query,
                    "steps": args.steps,
                    "lr": args.lr,
                    "meta_batch": 1,
                }
                config = FewShotConfig(
                    algo=algo,
                    backbone=args.backbone,
                    backbone_kw={"width": args.width} if args.width else {},
                    image_size=args.image_size,
                    shot=train_shot,
                    num_classes=len(train.classes),
                    dataset="neu",
                    novel=sets.focus,
                    **recipe,
                )
                torch.manual_seed(0)
                learner = build_learner(config)
                t0 = time.perf_counter()
                train_learner(learner, config, train, out_dir=runs / f"{algo}-{train_shot}shot", device=args.device,
                              amp=args.amp, init=args.init, log_every=max(1, args.steps // 10))  # fmt: skip
                train_seconds = time.perf_counter() - t0
                if args.transductive and isinstance(learner, ProtoNet):
                    learner.transductive_steps = args.transductive
                for shot in shots if algo == "finetune" else [train_shot]:
                    sampler = EpisodeSampler(support, way=6, shot=shot, query=args.query, query_set=query)
                    t0 = time.perf_counter()
                    report = evaluate(
                        learner, sampler, episodes=args.episodes, device=args.device, focus=sets.focus
                    )
                    row = {
                        "algo": algo,
                        "shot": shot,
                        "accuracy": 100 * report.accuracy,
                        "ci95": 100 * report.ci95,
                        "novel_accuracy": 100 * (report.focus_accuracy or 0),
                        "novel_ci95": 100 * (report.focus_ci95 or 0),
                        "per_class": {
                            k: {m: round(100 * v, 1) for m, v in pr.items()}
                            for k, pr in report.per_class.items()
                        },
                        "episodes": report.episodes,
                        "train_steps": args.steps,
                        "train_seconds": round(train_seconds, 1),
                        "eval_seconds": round(time.perf_counter() - t0, 1),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    device = describe_device(args.device)
    print(f"\n## P7 NEU few-shot — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device}\n")
    print(f"`{' '.join(['benchmarks/p7_neu_fewshot.py', *sys.argv[1:]])}`\n")
    print(
        "| learner | 6-way K | all queries % | novel queries % | pitted_surface P/R | scratches P/R | train s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        pr = r["per_class"]
        cells = [f"{pr[c]['precision']:.0f}/{pr[c]['recall']:.0f}" for c in ("pitted_surface", "scratches")]
        print(f"| {r['algo']} | {r['shot']} | {r['accuracy']:.1f} ± {r['ci95']:.1f} | {r['novel_accuracy']:.1f} ± "
              f"{r['novel_ci95']:.1f} | {cells[0]} | {cells[1]} | {r['train_seconds']} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"device": device, "argv": sys.argv[1:], "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
