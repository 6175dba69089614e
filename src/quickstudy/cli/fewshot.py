"""``quickstudy fewshot``: meta-train a few-shot learner on episodes, and evaluate it on new classes."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quickstudy.backbones import BACKBONES
from quickstudy.cli._common import add_amp, add_data_root, add_device, add_model, print_json, print_table
from quickstudy.data.classification import fewshot_sets
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.data.paths import data_root
from quickstudy.errors import QuickstudyError
from quickstudy.meta import (
    ALGORITHMS,
    FewShotConfig,
    FewShotLearner,
    build_learner,
    evaluate,
    load_learner,
    paper_recipe,
    train_learner,
)
from quickstudy.meta.nearest_mean import VIEW_COUNTS, nearest_mean_learner, with_test_time_views
from quickstudy.meta.protonet import ProtoNet
from quickstudy.pretrain import KIND as PRETRAIN_KIND
from quickstudy.pretrain import load_pretrained
from quickstudy.train import distributed, load_checkpoint

_DEFAULT_SIZE = {"omniglot": 28}  # NEU and folders: 84, the usual few-shot image size
KNOWN_DATASETS = ("omniglot", "neu")


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
    add_device(train)
    add_amp(train)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--out", required=True, help="run folder (checkpoint.pt, metrics.csv; it remembers the data)"
    )
    train.set_defaults(func=_train, check=check_train)

    ev = commands.add_parser(
        "eval",
        help="accuracy with a 95%% confidence interval over test episodes",
        description="Evaluate a meta-trained learner, or a self-supervised pretraining run's network, on "
        "test episodes of classes it never saw (Omniglot: the Vinyals test split; NEU: 6-way, supports "
        "from TRAIN, queries from TEST, accuracy also on the novel classes alone), on the data the run "
        "was trained on unless told otherwise. Per-class precision and recall are shown when the "
        "classes are few enough to name.",
    )
    add_model(
        ev,
        "a `fewshot train` run folder or checkpoint, or a `pretrain` run (scored by nearest mean)",
        old="--checkpoint",
    )
    ev.add_argument(
        "--dataset",
        help="omniglot, neu, or a folder of class folders (default: the run's; a pretraining run needs it)",
    )
    add_data_root(ev, remembered=True)
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
        help="ProtoNet and nearest-mean scoring: refine the class means with the episode's unlabelled "
        "queries (soft k-means, STEPS rounds)",
    )
    ev.add_argument(
        "--scoring",
        choices=["learner", "nearest-mean"],
        help="learner: the learner's own adaptation; nearest-mean: the nearest class mean of the "
        "backbone's embeddings, centred on the training classes' mean and L2-normalised (SimpleShot) "
        "(default: learner; nearest-mean for a pretraining run, which has no learner)",
    )
    ev.add_argument(
        "--tta",
        type=int,
        choices=VIEW_COUNTS,
        default=1,
        metavar="N",
        help="embed each image as the mean over N views: 2 adds the left-right mirror, 4 the flips "
        "that keep the axes, 8 also quarter turns (default: 1, the image alone)",
    )
    add_device(ev)
    ev.add_argument("--seed", type=int, default=0, help="episode seed (same seed, same episodes)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=_eval, check=check_eval)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise QuickstudyError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_train(args: argparse.Namespace) -> None:
    _positive(args, "way", "shot", "train_way", "query", "meta_batch", "steps", "width", "image_size")


def check_eval(args: argparse.Namespace) -> None:
    _positive(args, "way", "shot", "query", "episodes")
    if args.transductive < 0:
        raise QuickstudyError(f"--transductive must be at least 0 steps, got {args.transductive}")


def trained_on(args: argparse.Namespace) -> dict[str, str]:
    """What a run of `fewshot train` remembers of its data (in its config): the dataset, and the data
    root that `fewshot eval` reads it from unless told otherwise (absolute, so any folder works)."""
    dataset = args.dataset if args.dataset in KNOWN_DATASETS else str(Path(args.dataset).resolve())
    return {"dataset": dataset, "data_root": str(data_root(args.data_root).resolve())}


def eval_data(args: argparse.Namespace, remembered: dict[str, str]) -> tuple[str, Path]:
    """The dataset and data root `fewshot eval` reads: the options where given, else the run's."""
    dataset = args.dataset or remembered.get("dataset")
    if not dataset:
        raise QuickstudyError(f"{args.model}: the run does not say which data to test on; give --dataset")
    return dataset, data_root(args.data_root or remembered.get("data_root") or None)


def _train(args: argparse.Namespace) -> int:
    distributed.init_from_env(args.device)
    size = args.image_size or _DEFAULT_SIZE.get(args.dataset, 84)
    novel = [name for name in (args.novel or "").split(",") if name]
    data = trained_on(args)
    sets = fewshot_sets(data["dataset"], Path(data["data_root"]), size, novel)
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
        dataset=data["dataset"],
        data_root=data["data_root"],
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


@dataclass
class _Trained:
    """What `fewshot eval` scores: a meta-trained learner, or a pretraining run's network alone."""

    learner: FewShotLearner | None
    backbone: nn.Module
    name: str
    image_size: int
    novel: list[str]
    remembered: dict[str, str]


def _load(path: str, device: str) -> _Trained:
    if load_checkpoint(path).get("kind") == PRETRAIN_KIND:
        run = load_pretrained(path, device)
        return _Trained(None, run.backbone, f"{run.method} pretraining", run.image_size, [], {})
    learner, config = load_learner(path, map_location=device)
    remembered = {"dataset": config.dataset, "data_root": config.data_root}
    return _Trained(learner, learner.backbone, config.algo, config.image_size, config.novel, remembered)


def _eval(args: argparse.Namespace) -> int:
    trained = _load(args.model, args.device)
    scoring = args.scoring or ("learner" if trained.learner is not None else "nearest-mean")
    if scoring == "learner":
        if trained.learner is None:
            raise QuickstudyError(
                f"{args.model}: a pretraining run has no learner; use --scoring nearest-mean"
            )
        if args.transductive and not isinstance(trained.learner, ProtoNet):
            raise QuickstudyError(f"--transductive refines prototypes; {trained.name} has none")
        learner = with_test_time_views(trained.learner, args.tta)
        if isinstance(learner, ProtoNet):
            learner.transductive_steps = args.transductive
    dataset, root = eval_data(args, trained.remembered)
    sets = fewshot_sets(dataset, root, trained.image_size, trained.novel)
    if scoring == "nearest-mean":
        learner = nearest_mean_learner(
            trained.backbone,
            sets.train,
            views=args.tta,
            transductive_steps=args.transductive,
            device=args.device,
        )
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
        setting = {"scoring": scoring, "tta": args.tta, "transductive": args.transductive}
        print_json({"model": args.model, "algo": trained.name, **setting, **report.as_dict()})
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
    print_table(
        f"{trained.name}, {scoring} scoring, over {report.episodes} episodes",
        ["queries", "accuracy %", "± 95% CI"],
        rows,
    )
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
