"""``quickstudy fewshot``: meta-train a few-shot learner on episodes, and evaluate it on new classes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from quickstudy.backbones import BACKBONES
from quickstudy.cli._common import add_data_root, print_json, print_table
from quickstudy.data.classification import fewshot_sets
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.data.paths import data_root
from quickstudy.errors import QuickstudyError
from quickstudy.meta import (
    ALGORITHMS,
    FewShotConfig,
    build_learner,
    evaluate,
    load_learner,
    paper_recipe,
    train_learner,
)
from quickstudy.meta.protonet import ProtoNet
from quickstudy.train import distributed

_DEFAULT_SIZE = {"omniglot": 28}  # NEU and folders: 84, the usual few-shot image size


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fewshot",
        help="episodic few-shot learners: meta-train, evaluate",
        description="Meta-train a few-shot learner (ProtoNet, MAML, first-order MAML, ANIL, a MANN-style "
        "memory learner, or the fine-tuning baseline) and evaluate it on classes it never saw.",
    )
    commands = parser.add_subparsers(dest="fewshot_command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="meta-train a learner (defaults: the paper recipe for the algorithm)",
        description="Meta-train on episodes of the training classes: omniglot (P6: Vinyals trainval), "
        "neu (P7: TRAIN images of the four BASE classes) or a folder root/<class>/* (all classes but "
        "--novel). Defaults follow the published recipe: ProtoNet 60-way episodes, Adam 1e-3 halved "
        "every 2000 episodes; MAML at the test way with meta-batch 32, inner lr 0.4, one inner step "
        "(20-way: 16, 0.1, five). Rerunning into the same --out resumes the run.",
    )
    train.add_argument("--dataset", required=True, help="omniglot, neu, or a folder of class folders")
    add_data_root(train)
    train.add_argument("--algo", required=True, choices=ALGORITHMS)
    train.add_argument("--way", type=int, required=True, help="classes per test episode (N)")
    train.add_argument("--shot", type=int, required=True, help="support images per class (K)")
    train.add_argument("--train-way", type=int, help="classes per training episode (default: the recipe's)")
    train.add_argument("--query", type=int, help="query images per class in training episodes")
    train.add_argument("--meta-batch", type=int, help="episodes per optimisation step")
    train.add_argument("--steps", type=int, help="meta-training steps (default: the recipe's)")
    train.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    train.add_argument("--backbone", default="conv4", choices=sorted(BACKBONES))
    train.add_argument("--width", type=int, help="conv4: filters per block (default 64)")
    train.add_argument("--image-size", type=int, help="image side in pixels (default: 28 Omniglot, else 84)")
    train.add_argument("--novel", help="comma-separated classes held out of meta-training (folder datasets)")
    train.add_argument("--init", help="run folder or checkpoint with pretrained backbone weights")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.csv)")
    train.set_defaults(func=_train)

    ev = commands.add_parser(
        "eval",
        help="accuracy with a 95%% confidence interval over test episodes",
        description="Evaluate a meta-trained learner on test episodes of classes it never saw "
        "(Omniglot: the Vinyals test split; NEU: 6-way, supports from TRAIN, queries from TEST, "
        "accuracy also on the novel classes alone). Per-class precision and recall are shown when "
        "the classes are few enough to name.",
    )
    ev.add_argument("--checkpoint", required=True, help="run folder or checkpoint file")
    add_data_root(ev)
    ev.add_argument("--way", type=int, required=True)
    ev.add_argument("--shot", type=int, required=True)
    ev.add_argument("--query", type=int, default=15, help="queries per class (default 15)")
    ev.add_argument("--episodes", type=int, default=1000, help="test episodes (default 1000)")
    ev.add_argument(
        "--transductive",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="STEPS",
        help="ProtoNet: refine prototypes with the episode's unlabelled queries (soft k-means, STEPS rounds)",
    )
    ev.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ev.add_argument("--seed", type=int, default=0, help="episode seed (same seed, same episodes)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=_eval)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise QuickstudyError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _train(args: argparse.Namespace) -> int:
    _positive(args, "way", "shot", "train_way", "query", "meta_batch", "steps", "width", "image_size")
    distributed.init_from_env(args.device)
    size = args.image_size or _DEFAULT_SIZE.get(args.dataset, 84)
    novel = [name for name in (args.novel or "").split(",") if name]
    sets = fewshot_sets(args.dataset, data_root(args.data_root), size, novel)
    # Fail now, not after training, if the test episodes asked for cannot be drawn.
    EpisodeSampler(sets.test_support, way=args.way, shot=args.shot, query=1, query_set=sets.test_query)
    recipe = paper_recipe(args.algo, args.way, args.shot)
    given = {
        "train_way": args.train_way,
        "query": args.query,
        "meta_batch": args.meta_batch,
        "steps": args.steps,
        "lr": args.lr,
    }
    options = recipe | {key: value for key, value in given.items() if value is not None}
    classes = len(sets.train.classes)
    if args.train_way is None and options["train_way"] > classes:
        options["train_way"] = classes  # e.g. NEU has four base classes, not 60
    config = FewShotConfig(
        algo=args.algo,
        backbone=args.backbone,
        backbone_kw={"width": args.width} if args.width else {},
        image_size=size,
        shot=args.shot,
        num_classes=classes,
        dataset=args.dataset if args.dataset in ("omniglot", "neu") else str(Path(args.dataset).resolve()),
        novel=sets.focus,
        seed=args.seed,
        **options,
    )
    torch.manual_seed(args.seed)
    learner = build_learner(config)
    started = time.perf_counter()
    metrics = train_learner(
        learner, config, sets.train, out_dir=args.out, device=args.device, amp=args.amp, init=args.init
    )
    if distributed.is_main():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(
            f"trained {config.algo} in {time.perf_counter() - started:.0f} s: {shown}; checkpoint in {args.out}"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    _positive(args, "way", "shot", "query", "episodes")
    learner, config = load_learner(args.checkpoint, map_location=args.device)
    if args.transductive:
        if not isinstance(learner, ProtoNet):
            raise QuickstudyError(f"--transductive refines prototypes; {config.algo} has none")
        learner.transductive_steps = args.transductive
    sets = fewshot_sets(config.dataset, data_root(args.data_root), config.image_size, config.novel)
    support = sets.test_support.to(args.device)
    query = sets.test_query.to(args.device) if sets.test_query is not None else None
    sampler = EpisodeSampler(support, way=args.way, shot=args.shot, query=args.query, query_set=query)
    report = evaluate(
        learner.to(args.device),
        sampler,
        episodes=args.episodes,
        seed=args.seed,
        device=args.device,
        focus=sets.focus,
        progress=not args.json,
    )
    if args.json:
        print_json({"checkpoint": args.checkpoint, "algo": config.algo, **report.as_dict()})
        return 0
    rows = [[f"{args.way}-way {args.shot}-shot", f"{100 * report.accuracy:.2f}", f"{100 * report.ci95:.2f}"]]
    if report.focus_accuracy is not None:
        rows.append(
            [
                f"novel: {', '.join(report.focus)}",
                f"{100 * report.focus_accuracy:.2f}",
                f"{100 * (report.focus_ci95 or 0):.2f}",
            ]
        )
    print_table(f"{config.algo} over {report.episodes} episodes", ["queries", "accuracy %", "± 95% CI"], rows)
    if report.per_class:
        print_table(
            "per class (all queries of all episodes)",
            ["class", "precision %", "recall %"],
            [
                [name, f"{100 * pr['precision']:.1f}", f"{100 * pr['recall']:.1f}"]
                for name, pr in report.per_class.items()
            ],
        )
    return 0
