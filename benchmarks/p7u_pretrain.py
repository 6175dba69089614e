"""P7 vs P7-u (DESIGN.md): does self-supervised pretraining on unlabelled TRAIN images help new defect types?

For each backbone x image size x pretraining method ("none" = the strict P7 baseline):

1. pretrain (SimCLR or BYOL) on all 1440 NEU TRAIN images, labels and boxes unused (P7-u);
2. learner, BASE labels only: ``nearest-mean`` (the pretrained backbone as it is) and/or
   ``protonet`` (episodic ProtoNet training on the four BASE classes, started from the pretrained
   backbone, or from scratch for "none");
3. test: 6-way K-shot episodes, supports from TRAIN, queries from TEST, plain and transductive
   (soft k-means prototypes refined with the episode's queries), scored by
   ``quickstudy.meta.nearest_mean`` (as ``quickstudy fewshot eval --scoring nearest-mean`` does:
   CL2N embeddings centred on the BASE TRAIN images, ``--tta``: mean over eight flips and turns) and
   evaluated by ``quickstudy.meta.evaluate`` (the CLI's episodes). Reported: accuracy on the novel
   classes' queries (mean and 95% CI over episodes), per-class precision/recall, and recall at 99%
   precision (per novel class, one against the rest, on class posteriors pooled over all episodes,
   ``softmax(-d / T)`` with ``T`` the spread of the BASE images around their class means).

Episodes drawn before this script scored through the library (BENCHMARKS.md's P7-u rows) came from
its own sampler: a rerun is expected within the confidence interval, not to the digit.

CPU (reduced):  .venv/bin/python benchmarks/p7u_pretrain.py --backbones conv4 --width 32 --sizes 64 \\
                    --pretrain-steps 300 --protonet-steps 300 --episodes 1000 --threads 2
GPU (H100):     .venv/bin/python benchmarks/p7u_pretrain.py --device cuda --amp --json-out p7u.json
Detector trunk: .venv/bin/python benchmarks/p7u_pretrain.py --backbones detector --arch tiny --sizes 200 \\
                    --methods none,simclr --pretrained-run /tmp/pretrain-detector-tiny --protonet-steps 150
                (``--pretrained-run`` scores a finished ``quickstudy pretrain`` run instead of pretraining)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quickstudy.data.classification import ImageClassSet, store_classes
from quickstudy.data.episodes import Episode, EpisodeSampler
from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
from quickstudy.evaluate.operating import operating_points
from quickstudy.labels import Store
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL, import_neu_det, neu_class_of
from quickstudy.meta import FewShotConfig, FewShotReport, build_learner, evaluate, train_learner
from quickstudy.meta.evaluation import embed_images
from quickstudy.meta.nearest_mean import nearest_mean_learner
from quickstudy.meta.transductive import shared_temperature
from quickstudy.pretrain import load_pretrained, pretrain
from quickstudy.train import describe_device, load_checkpoint


def neu_sets(data_root: Path, work: Path, size: int) -> tuple[ImageClassSet, ImageClassSet]:
    """P1 TRAIN and TEST of NEU-DET as image-level classes (the image's folder class), ``size`` px."""
    store_path = work / "neu.qs"
    with Store.open(store_path) as store:
        if not store.images():
            import_neu_det(store, data_root / "neu-det", add_classes=True)
        train = store_classes(store, split="train", size=size, class_of=lambda s: neu_class_of(s.path))
        test = store_classes(store, split="test", size=size, class_of=lambda s: neu_class_of(s.path))
    return train, test


@dataclass
class PooledScores:
    """Every query's true class and class posteriors ``softmax(scores / temperature)``, over all
    episodes, in the classes' own order (for recall at 99% precision and the confusions)."""

    temperature: float
    classes: int
    truth: list[torch.Tensor] = field(default_factory=list)
    probabilities: list[torch.Tensor] = field(default_factory=list)

    def add(self, episode: Episode, scores: torch.Tensor) -> None:
        posteriors = torch.softmax(scores.float() / self.temperature, dim=1).cpu()
        pooled = torch.zeros(len(posteriors), self.classes)
        pooled[:, episode.classes.cpu()] = posteriors
        self.truth.append(episode.classes[episode.query_y].cpu())
        self.probabilities.append(pooled)


def summarise(
    report: FewShotReport, pooled: PooledScores, class_names: list[str], novel: list[int]
) -> dict[str, Any]:
    truth = torch.cat(pooled.truth)
    probabilities = torch.cat(pooled.probabilities)
    predicted = probabilities.argmax(dim=1)
    points = operating_points(probabilities.numpy(), truth.numpy(), class_names, 0.99)
    per_class = {
        name: {**report.per_class[name], "recall_at_p99": points[name].recall} for name in class_names
    }
    confused_with = {}
    for c in novel:
        wrong = predicted[(truth == c) & (predicted != c)]
        if len(wrong):
            confused_with[class_names[c]] = class_names[int(torch.mode(wrong).values)]
    return {
        "novel_accuracy": report.focus_accuracy,
        "novel_ci95": report.focus_ci95,
        "accuracy": report.accuracy,
        "ci95": report.ci95,
        "per_class": per_class,
        "novel_mostly_confused_with": confused_with,
    }


def protonet_stage(
    base_train: ImageClassSet,
    args: argparse.Namespace,
    backbone: str,
    size: int,
    init: Path | None,
    out: Path,
) -> tuple[nn.Module, float]:
    """Episodic ProtoNet on the four BASE classes (4-way, ``--train-shot``), from ``init`` or from scratch."""
    config = FewShotConfig(
        algo="protonet",
        backbone=backbone,
        backbone_kw=backbone_kwargs(args, backbone),
        image_size=size,
        train_way=len(NEU_BASE),
        shot=args.train_shot,
        query=args.train_query,
        steps=args.protonet_steps,
        lr=args.protonet_lr,
        dataset="neu-p7-base",
        novel=list(NEU_NOVEL),
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    learner = build_learner(config)
    started = time.perf_counter()
    train_learner(
        learner, config, base_train, out_dir=out, device=args.device, amp=args.amp, init=init, log_every=25
    )
    return learner.backbone, time.perf_counter() - started


def backbone_kwargs(args: argparse.Namespace, backbone: str) -> dict[str, Any]:
    if backbone == "conv4":
        return {"width": args.width}
    if backbone == "detector":  # the detector's ResNet + FPN at --arch, levels pooled
        config = DetectorConfig(**ARCHITECTURES[args.arch])
        return {"widths": config.widths, "depths": config.depths, "fpn_channels": config.fpn_channels}
    return {"widths": tuple(args.resnet_widths)}


def pretrained_run(args: argparse.Namespace, backbone: str, size: int, method: str) -> tuple[Path, float]:
    """``--pretrained-run`` (checked to be of this backbone, size and method) and its training seconds."""
    run = load_pretrained(args.pretrained_run)
    recorded = (run.backbone_name, run.backbone_kwargs, run.image_size, run.method)
    wanted = (backbone, backbone_kwargs(args, backbone), size, method)
    if recorded != wanted:
        raise SystemExit(f"{run.file}: a run of {recorded}, but this grid cell is {wanted}")
    return args.pretrained_run, float(load_checkpoint(run.file).get("seconds", 0.0))


def evaluate_backbone(
    network: nn.Module,
    train: ImageClassSet,
    test: ImageClassSet,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Nearest-mean scoring of ``network`` on 6-way episodes (supports TRAIN, queries TEST), each
    ``--shots`` plain and with ``--transductive-steps``."""
    names = train.classes
    novel = [names.index(c) for c in NEU_NOVEL]
    base_train = train.select(list(NEU_BASE))
    support, query = train.to(args.device), test.to(args.device)
    out: dict[str, Any] = {}
    for steps in sorted({0, args.transductive_steps}):
        learner = nearest_mean_learner(
            network, base_train, views=8 if args.tta else 1, transductive_steps=steps, device=args.device
        )
        # The posteriors' temperature from BASE labels only: the spread of base images around their class means.
        base = embed_images(learner.backbone, base_train, args.device)
        labels = base_train.labels.to(base.device)
        base_means = torch.stack([base[labels == c].mean(0) for c in range(len(base_train.classes))])
        temperature = float(shared_temperature(base, base_means))
        for shot in args.shots:
            pooled = PooledScores(temperature, len(names))
            sampler = EpisodeSampler(support, way=len(names), shot=shot, query=args.query, query_set=query)
            report = evaluate(
                learner,
                sampler,
                episodes=args.episodes,
                seed=args.seed,
                device=args.device,
                focus=list(NEU_NOVEL),
                on_episode=pooled.add,
            )
            out[f"{shot}-shot{' transductive' if steps else ''}"] = summarise(report, pooled, names, novel)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--work", type=Path, default=Path("runs/p7u"), help="run folders (reused: resumes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA while training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", default="conv4,resnet12")
    parser.add_argument("--width", type=int, default=64, help="conv4 filters per block")
    parser.add_argument("--resnet-widths", type=int, nargs=4, default=[64, 128, 256, 512])
    parser.add_argument(
        "--arch", default="tiny", choices=sorted(ARCHITECTURES), help="detector: network size"
    )
    parser.add_argument(
        "--pretrained-run",
        type=Path,
        help="score this finished pretraining run (one backbone, size and method) instead of pretraining",
    )
    parser.add_argument("--methods", default="none,simclr,byol", help="'none' = strict P7 (no pretraining)")
    parser.add_argument("--learners", default="nearest-mean,protonet")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--pretrain-batch", type=int, default=256)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--protonet-steps", type=int, default=500)
    parser.add_argument("--protonet-lr", type=float, default=5e-4)
    parser.add_argument("--train-shot", type=int, default=5)
    parser.add_argument("--train-query", type=int, default=15)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--query", type=int, default=15, help="TEST queries per class per episode")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--transductive-steps", type=int, default=3, help="0: plain scoring only")
    parser.add_argument("--tta", action="store_true", help="average embeddings over flips and quarter turns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.shots = [int(s) for s in args.shots.split(",")]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    device_name = describe_device(args.device)
    rows: list[dict[str, Any]] = []
    for size in [int(s) for s in args.sizes.split(",")]:
        train, test = neu_sets(args.data_root, args.work, size)
        stored: ImageClassSet | None = None
        base_train = train.select(list(NEU_BASE))
        for backbone in args.backbones.split(","):
            for method in args.methods.split(","):
                tag = f"{backbone}-{size}px-{method}"
                pretrain_dir = args.work / f"pretrain-{tag}"
                pretrain_seconds = 0.0
                if method != "none" and args.pretrained_run:
                    pretrain_dir, pretrain_seconds = pretrained_run(args, backbone, size, method)
                elif method != "none":
                    if stored is None:  # pretraining crops are cut from twice the size: they keep detail
                        stored, _ = neu_sets(args.data_root, args.work, 2 * size)
                    metrics = pretrain(
                        stored.images,  # all six classes' TRAIN images; their labels are never read
                        out_dir=pretrain_dir,
                        backbone=backbone,
                        backbone_kwargs=backbone_kwargs(args, backbone),
                        method=method,
                        image_size=size,
                        steps=args.pretrain_steps,
                        batch_size=args.pretrain_batch,
                        lr=args.pretrain_lr,
                        device=args.device,
                        amp=args.amp,
                        seed=args.seed,
                    )
                    pretrain_seconds = metrics["seconds"]
                for learner in args.learners.split(","):
                    if method == "none" and learner == "nearest-mean":
                        continue  # a random network's nearest mean is not a baseline anyone uses
                    started = time.perf_counter()
                    if learner == "nearest-mean":
                        network, label_seconds = load_pretrained(pretrain_dir).backbone, 0.0
                    else:
                        init = pretrain_dir if method != "none" else None
                        network, label_seconds = protonet_stage(
                            base_train, args, backbone, size, init, args.work / f"protonet-{tag}"
                        )
                    results = evaluate_backbone(network, train, test, args)
                    row = {
                        "protocol": "P7" if method == "none" else "P7-u",
                        "backbone": backbone,
                        "size": size,
                        "method": method,
                        "learner": learner,
                        "pretrain_seconds": round(pretrain_seconds, 1),
                        "label_training_seconds": round(label_seconds, 1),
                        "eval_seconds": round(time.perf_counter() - started - label_seconds, 1),
                        "results": results,
                    }
                    rows.append(row)
                    print_row(row)
    summary = {
        "device": device_name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    print_table(rows)


def print_row(row: dict[str, Any]) -> None:
    head = f"{row['protocol']:5} {row['backbone']} {row['size']}px {row['method']:6} {row['learner']:12}"
    times = f"(pretrain {row['pretrain_seconds']}s, labels {row['label_training_seconds']}s)"
    print(head, times, flush=True)
    for setting, r in row["results"].items():
        novel = "  ".join(
            f"{name} P/R {100 * m['precision']:.0f}/{100 * m['recall']:.0f} R@P99 {100 * m['recall_at_p99']:.0f}"
            for name, m in r["per_class"].items()
            if name in NEU_NOVEL
        )
        print(
            f"    {setting:22} novel acc {100 * r['novel_accuracy']:.1f} ± {100 * r['novel_ci95']:.1f}"
            f"  all {100 * r['accuracy']:.1f}  {novel}  confused: {r['novel_mostly_confused_with']}",
            flush=True,
        )


def print_table(rows: list[dict[str, Any]]) -> None:
    """A markdown table, ready for benchmarks/results/pretrain.md."""
    print(
        "\n| protocol | backbone | px | pretrain | learner | setting | novel acc | "
        "pitted P/R | scratches P/R | R@P99 pitted / scratches | pretrain s | label s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for setting, r in row["results"].items():
            pc = r["per_class"]
            pit, scr = pc["pitted_surface"], pc["scratches"]
            print(
                f"| {row['protocol']} | {row['backbone']} | {row['size']} | {row['method']} | {row['learner']} "
                f"| {setting} | {100 * r['novel_accuracy']:.1f} ± {100 * r['novel_ci95']:.1f} "
                f"| {100 * pit['precision']:.0f}/{100 * pit['recall']:.0f} "
                f"| {100 * scr['precision']:.0f}/{100 * scr['recall']:.0f} "
                f"| {100 * pit['recall_at_p99']:.0f} / {100 * scr['recall_at_p99']:.0f} "
                f"| {row['pretrain_seconds']} | {row['label_training_seconds']} |"
            )


if __name__ == "__main__":
    main()
