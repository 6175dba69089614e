"""P7 vs P7-u (DESIGN.md): does self-supervised pretraining on unlabelled TRAIN images help new defect types?

For each backbone x image size x pretraining method ("none" = the strict P7 baseline):

1. pretrain (SimCLR or BYOL) on all 1440 NEU TRAIN images, labels and boxes unused (P7-u);
2. learner, BASE labels only: ``nearest-mean`` (the pretrained backbone as it is) and/or
   ``protonet`` (episodic ProtoNet training on the four BASE classes, started from the pretrained
   backbone, or from scratch for "none");
3. test: 6-way K-shot episodes, supports from TRAIN, queries from TEST, plain and transductive
   (soft k-means prototypes refined with the episode's queries). Reported: accuracy on the novel
   classes' queries (mean and 95% CI over episodes), per-class precision/recall of the novel
   classes, and recall at 99% precision (per novel class, one against the rest, on the calibrated
   class posteriors pooled over all episodes; the threshold is the curve's point on these scores).

Backbones are used in eval mode (batch norm on running statistics), so every image's embedding
does not depend on the episode; they are computed once and episodes are drawn over embeddings.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.data.classification import ImageClassSet, store_classes
from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
from quickstudy.evaluate.operating import operating_points
from quickstudy.labels import Store
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL, import_neu_det, neu_class_of
from quickstudy.meta import FewShotConfig, build_learner, train_learner
from quickstudy.meta.evaluation import mean_ci95
from quickstudy.meta.transductive import class_log_probabilities, refine_prototypes, shared_temperature
from quickstudy.pretrain import load_pretrained, pretrain
from quickstudy.train import describe_device, load_checkpoint, step_generator


def neu_sets(data_root: Path, work: Path, size: int) -> tuple[ImageClassSet, ImageClassSet]:
    """P1 TRAIN and TEST of NEU-DET as image-level classes (the image's folder class), ``size`` px."""
    store_path = work / "neu.qs"
    with Store.open(store_path) as store:
        if not store.images():
            import_neu_det(store, data_root / "neu-det", add_classes=True)
        train = store_classes(store, split="train", size=size, class_of=lambda s: neu_class_of(s.path))
        test = store_classes(store, split="test", size=size, class_of=lambda s: neu_class_of(s.path))
    return train, test


@torch.no_grad()
def embed(
    backbone: nn.Module, images: torch.Tensor, device: str, tta: bool, batch: int = 256
) -> torch.Tensor:
    """``[N, D]`` embeddings of ``uint8 [N, H, W]`` images; ``tta`` averages the eight flips/quarter turns."""
    backbone.eval()
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device).unsqueeze(1).float().div_(255)
        views = [x]
        if tta:
            views = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
        out.append(torch.stack([backbone(v).float() for v in views]).mean(0))
    return torch.cat(out)


def normalise(features: torch.Tensor, centre: torch.Tensor, how: str) -> torch.Tensor:
    """SimpleShot (Wang et al. 2019): ``cl2n`` centres on the BASE TRAIN mean, then L2-normalises."""
    if how == "cl2n":
        features = features - centre
    if how in ("l2", "cl2n"):
        features = F.normalize(features, dim=1)
    return features


@dataclass
class EpisodeResults:
    truth: list[torch.Tensor]
    log_probs: list[torch.Tensor]


def run_episodes(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    shot: int,
    query: int,
    episodes: int,
    transductive_steps: int,
    temperature: float,
    seed: int,
) -> EpisodeResults:
    """6-way (every class) ``shot``-shot episodes: supports from TRAIN, ``query`` TEST queries per class.

    Episode ``i`` is drawn from ``step_generator(seed, i)``, so every model sees the same episodes.
    (The project's ``EpisodeSampler`` draws images; this draws the same kind of episode over
    precomputed embeddings, which is equivalent for an eval-mode backbone and 100x cheaper.)
    """
    classes = int(train_labels.max()) + 1
    train_members = [torch.nonzero(train_labels == c).flatten() for c in range(classes)]
    test_members = [torch.nonzero(test_labels == c).flatten() for c in range(classes)]
    results = EpisodeResults([], [])
    for index in range(episodes):
        g = step_generator(seed, index)
        support = torch.stack([m[torch.randperm(len(m), generator=g)[:shot]] for m in train_members])
        queries = torch.cat([m[torch.randperm(len(m), generator=g)[:query]] for m in test_members])
        prototypes = train_features[support].mean(dim=1)
        query_features = test_features[queries]
        if transductive_steps:
            prototypes = refine_prototypes(
                prototypes, query_features, steps=transductive_steps, support_counts=shot
            )
            log_probs = class_log_probabilities(query_features, prototypes)  # the mixture's own temperature
        else:
            log_probs = class_log_probabilities(query_features, prototypes, temperature)
        results.truth.append(test_labels[queries])
        results.log_probs.append(log_probs)
    return results


def summarise(results: EpisodeResults, class_names: list[str], novel: list[int]) -> dict[str, Any]:
    truth = torch.stack(results.truth)  # [episodes, queries]
    log_probs = torch.stack(results.log_probs)  # [episodes, queries, classes]
    predicted = log_probs.argmax(dim=2)
    correct = (predicted == truth).float()
    in_novel = torch.isin(truth, torch.tensor(novel))
    novel_accuracy, novel_ci = mean_ci95((correct * in_novel).sum(1) / in_novel.sum(1))
    accuracy, ci = mean_ci95(correct.mean(dim=1))
    flat_truth, flat_pred = truth.flatten(), predicted.flatten()
    probs = log_probs.flatten(0, 1).exp().numpy()
    points = operating_points(probs, flat_truth.numpy(), class_names, 0.99)
    per_class = {}
    for c in range(len(class_names)):
        true_positive = int(((flat_pred == c) & (flat_truth == c)).sum())
        per_class[class_names[c]] = {
            "precision": true_positive / max(1, int((flat_pred == c).sum())),
            "recall": true_positive / max(1, int((flat_truth == c).sum())),
            "recall_at_p99": points[class_names[c]].recall,
        }
    confused_with = {}
    for c in novel:
        wrong = flat_pred[(flat_truth == c) & (flat_pred != c)]
        if len(wrong):
            confused_with[class_names[c]] = class_names[int(torch.mode(wrong).values)]
    return {
        "novel_accuracy": novel_accuracy,
        "novel_ci95": novel_ci,
        "accuracy": accuracy,
        "ci95": ci,
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
    network = network.to(args.device)
    names = train.classes
    base = [names.index(c) for c in NEU_BASE]
    novel = [names.index(c) for c in NEU_NOVEL]
    train_features = embed(network, train.images, args.device, args.tta)
    test_features = embed(network, test.images, args.device, args.tta)
    train_labels, test_labels = train.labels.to(args.device), test.labels.to(args.device)
    is_base = torch.isin(train_labels, torch.tensor(base, device=args.device))
    centre = train_features[is_base].mean(dim=0)
    train_features = normalise(train_features, centre, args.feature_norm)
    test_features = normalise(test_features, centre, args.feature_norm)
    # Strict scoring temperature from BASE labels only: the spread of base images around their class means.
    base_means = torch.stack([train_features[train_labels == c].mean(0) for c in base])
    temperature = float(shared_temperature(train_features[is_base], base_means))
    # Episodes are a few hundred tiny tensor ops each: faster on the CPU than as GPU kernel launches.
    train_features, test_features = train_features.cpu(), test_features.cpu()
    train_labels, test_labels = train_labels.cpu(), test_labels.cpu()
    out: dict[str, Any] = {}
    for shot in args.shots:
        for steps in sorted({0, args.transductive_steps}):
            results = run_episodes(
                train_features,
                train_labels,
                test_features,
                test_labels,
                shot=shot,
                query=args.query,
                episodes=args.episodes,
                transductive_steps=steps,
                temperature=temperature,
                seed=args.seed,
            )
            out[f"{shot}-shot{' transductive' if steps else ''}"] = summarise(results, names, novel)
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
    parser.add_argument("--feature-norm", choices=["none", "l2", "cl2n"], default="cl2n")
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
