#!/usr/bin/env python3
"""P2: NEU-DET with full labels — quickstudy's detector against torchvision RetinaNet, in one run.

Trains quickstudy's detector on the P1 TRAIN split as `quickstudy train` does with the same options
(they are its options, checked and passed on by the same code: ``quickstudy.cli.detect``; the
n % 5 == 1 images are held out for calibration unless --fit-all), once, or once per weighting named in
--weightings (the default weighting was chosen from this comparison), evaluates on TEST with
pycocotools (mAP, mAP50, AP50 per class, AR@100 class-agnostic, image-level precision/recall at the
calibrated thresholds) and also with the anchor's numpy metrics (``../shared/anchors/neu_metrics.py``), then runs the anchor RetinaNet
(``../shared/anchors/neu_retinanet.py``, random init, same split, epochs and flips) as a subprocess
and reads its metrics. ``--speed`` instead times CPU inference at batch 1, 200 px, for both models
in one process (the "5x faster" goal), and a few training steps of ours.

GPU (H100):  .venv/bin/python benchmarks/p2_neu_detect.py --device cuda --epochs 24 --json-out p2.json
CPU smoke:   .venv/bin/python benchmarks/p2_neu_detect.py --limit 48 --epochs 1 --arch tiny --no-retinanet
CPU speed:   .venv/bin/python benchmarks/p2_neu_detect.py --speed --threads 2
From a self-supervised pretraining run (labels unused):  ... --arch tiny --init /tmp/pretrain-detector-tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from quickstudy.cli.detect import add_training_options, check_train, training_keywords
from quickstudy.detect.evaluation import evaluate_detector
from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import DEFAULT_BATCH_SIZE, DEFAULT_WEIGHTING, split_validation, train_detector
from quickstudy.labels.known import NEU_CLASSES, import_neu_det
from quickstudy.labels.store import Store
from quickstudy.train import describe_device

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"
DATA = ROOT.parent / "shared" / "data" / "neu-det"


def neu_store(path: Path, data: Path) -> Store:
    """A label store holding all of NEU-DET with the P1 split tagged (imported once per path; a store
    left empty by a failed import, e.g. a wrong --data, is filled on the next run)."""
    store = Store.open(path)
    if not store.stats()["images"]:
        import_neu_det(store, data)
    return store


def anchor_metrics(predictor: Predictor, samples: list, classes: list[str]) -> dict[str, Any]:
    """The anchor's numpy VOC-style metrics on our predictions (same code that scores RetinaNet)."""
    sys.path.insert(0, str(ANCHORS))
    import neu_metrics  # type: ignore[import-not-found]

    index = {c: i for i, c in enumerate(neu_metrics.CLASSES)}
    outputs = predictor.raw([s.path for s in samples])
    gts, preds = {}, {}
    for sample, out in zip(samples, outputs, strict=True):
        labelled = [b for b in sample.boxes if len(b.allowed) == 1]
        gts[sample.path.stem] = (
            [b.xyxy for b in labelled],
            [index[next(iter(b.allowed))] for b in labelled],
        )
        labels = [index[classes[int(c)]] for c in out["labels"]]
        preds[sample.path.stem] = (out["boxes"].numpy(), out["scores"].numpy(), labels)
    m = neu_metrics.evaluate(gts, preds)
    return {
        "mAP50": m["mAP50"],
        "mAP50_95": m["mAP50_95"],
        "AP50": {c: m["per_class"][c].get("AP50") for c in neu_metrics.CLASSES},
    }


def score_with(predictor: Predictor, samples: list, variant: str) -> dict[str, Any]:
    """The eval report with the model's inference settings changed as ``variant`` says
    (``"proposals=100,proposal_nms=0.7"``: DetectorConfig fields), then restored."""
    original = predictor.model.config
    settings = dict(item.split("=") for item in variant.split(","))
    predictor.model.config = replace(
        original, **{key: type(getattr(original, key))(value) for key, value in settings.items()}
    )
    try:
        return evaluate_detector(predictor, samples)
    finally:
        predictor.model.config = original


def train_and_score(
    store: Store,
    out: Path,
    args: argparse.Namespace,
    samples: list | None = None,
    test_store: Store | None = None,
    inference_variants: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Train one detector (on ``samples`` if given, else the store's TRAIN), evaluate it on the TEST
    images of ``test_store`` (default: ``store``), and again with each of ``inference_variants``
    (:func:`score_with`); returns the eval reports plus timings. A folder that already holds a model
    (e.g. P2's, passed to P4/P5 as ``--full-model``) is scored as it is."""
    if args.score_on == "validation" and args.fit_all:
        raise SystemExit("--score-on validation: with --fit-all the held-out TRAIN images are fitted too")
    seconds = None
    if not (out / "versions").is_dir():
        started = time.perf_counter()
        train_detector(store, out, **{**training_options(args), "samples": samples, **kw})
        seconds = time.perf_counter() - started
    predictor = Predictor.from_dir(out, device=args.device)
    scored = test_store or store
    if args.score_on == "validation":  # choosing inference settings without looking at TEST
        test = split_validation(scored.samples("train"))[1]
    else:
        test = scored.samples("test")
    if args.test_limit:
        test = test[:: max(1, len(test) // args.test_limit)][: args.test_limit]
    report = evaluate_detector(predictor, test)
    report["train_seconds"] = seconds
    report["anchor_metrics"] = anchor_metrics(predictor, test, predictor.classes)
    if inference_variants:  # the same trained model, other inference settings (no retraining)
        report["inference_variants"] = {
            variant: score_with(predictor, test, variant) for variant in inference_variants.split(";")
        }
    return report


def run_retinanet(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(ANCHORS / "neu_retinanet.py"),
        "--out",
        str(out),
        "--epochs",
        str(args.retinanet_epochs or args.epochs),
        "--size",
        "200",
        "--backbone",
        args.retinanet_backbone,
        "--device",
        args.device,
        "--workers",
        str(args.workers),
        "--data",
        str(args.data),
    ]
    if args.limit:
        command += ["--limit", str(args.limit)]
    print("running", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / "metrics.json").read_text())


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """CPU ms per 200x200 image at batch 1 for ours and RetinaNet-R50 (random init), interleaved."""
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.set_num_threads(args.threads)
    config = DetectorConfig(**ARCHITECTURES[args.arch])
    ours = DefectDetector(list(NEU_CLASSES), config).eval()
    if args.model:
        ours = Predictor.from_dir(args.model).model
    retina = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=7, min_size=200, max_size=200, score_thresh=0.001
    ).eval()
    image = torch.rand(1, 1, 200, 200)
    times: dict[str, list[float]] = {"ours": [], "retinanet_r50": []}
    with torch.no_grad():
        for _ in range(2):  # warm-up
            ours(image)
            retina([image[0].expand(3, -1, -1)])
        for _ in range(args.repeats):
            t = time.perf_counter()
            ours(image)
            times["ours"].append(time.perf_counter() - t)
            t = time.perf_counter()
            retina([image[0].expand(3, -1, -1)])
            times["retinanet_r50"].append(time.perf_counter() - t)
    result: dict[str, Any] = {
        name: 1000 * sorted(v)[len(v) // 2] for name, v in times.items()
    }  # median ms per image
    result["speedup"] = result["retinanet_r50"] / result["ours"]
    if args.profile:  # where our inference time goes: share of CPU time per operator, top 8
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                ours(image)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        result["ours_profile_self_cpu_share"] = {e.key: round(e.self_cpu_time_total / total, 3) for e in top}
    # training throughput of ours on this CPU: a few steps at the real batch size
    model = DefectDetector(list(NEU_CLASSES), config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    images = torch.rand(batch_size, 1, 200, 200)
    boxes = torch.tensor([[[20.0, 30, 120, 90], [50, 100, 190, 190]]]).expand(batch_size, 2, 4)
    valid = torch.ones(batch_size, 2, dtype=torch.bool)
    allowed = torch.zeros(batch_size * 2, len(NEU_CLASSES), dtype=torch.bool)
    allowed[:, 0] = True
    index = torch.arange(batch_size).repeat_interleave(2)[:, None].float()
    targets = {
        "boxes": boxes,
        "valid": valid,
        "rois": torch.cat([index, boxes.reshape(-1, 4)], 1),
        "roi_allowed": allowed,
        "roi_support": torch.arange(batch_size * 2) % 2 == 0,
    }
    steps = 3
    t = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(images, targets)
        assert isinstance(out, dict)
        (out["loss_localize"] + out["loss_recognize"]).backward()
        optimizer.step()
    result["ours_train_images_per_second"] = steps * batch_size / (time.perf_counter() - t)
    result["threads"] = args.threads
    result["device"] = describe_device("cpu")
    return result


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


# Experiment settings of DetectorConfig that `quickstudy train` does not offer (unset: the --arch's)
NETWORK_OPTIONS: dict[str, dict[str, Any]] = {
    "head_convs": {"type": int, "help": "convolutions in each localization tower"},
    "center_radius": {"type": float, "help": "positives within this many strides of a box centre"},
    "size_bounds": {
        "type": _floats,
        "help": "A,B: box sizes (px) separating the pyramid levels (see --level-by)",
    },
    "score_loss": {
        "choices": ["focal", "quality"],
        "help": "the defect score's loss: focal against 0/1, or quality focal against the box's IoU (GFL)",
    },
    "level_by": {
        "choices": ["reach", "area"],
        "help": "a box's size for its level: a location's farthest edge (FCOS) or the box's sqrt(w*h)/2",
    },
}


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """``train_detector``'s keywords: what `quickstudy train` passes for the same options (its own
    check and translation), with the experiment settings of NETWORK_OPTIONS on top."""
    check_train(args)
    options = training_keywords(args)
    changed = {field: getattr(args, field) for field in NETWORK_OPTIONS if getattr(args, field) is not None}
    options["config"] = replace(options["config"], **changed)
    return options


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """`quickstudy train`'s options (all but --store and --out: the benchmark makes its own store and
    folders), and what every NEU-DET detector benchmark adds: data, work folder, smoke-run test
    limit, the scored split, experiment settings, CPU threads."""
    add_training_options(parser)
    pseudo_labels = parser._option_string_actions["--pseudo-labels"]
    parser.add_argument(  # the spelling of the commands recorded in benchmarks/results/
        "--pseudo-label-confidence", dest="pseudo_labels", type=pseudo_labels.type, help=argparse.SUPPRESS
    )
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--work", type=Path, help="folder for the store and models (default: a temp dir)")
    parser.add_argument("--test-limit", type=int, help="evaluate on N test images only (smoke runs)")
    parser.add_argument(
        "--score-on",
        choices=["test", "validation"],
        default="test",
        help="score on TEST, or on the held-out TRAIN images (P1's model-selection set; of a model "
        "trained without --fit-all) to choose inference settings without looking at TEST",
    )
    for field, options in NETWORK_OPTIONS.items():
        parser.add_argument("--" + field.replace("_", "-"), dest=field, **options)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--weightings",
        help="W1,W2,...: one run per weighting, to compare them (default: one run, --weighting's)",
    )
    parser.add_argument("--no-retinanet", action="store_true")
    parser.add_argument(
        "--no-ours", action="store_true", help="only the RetinaNet anchor (a GPU job of its own)"
    )
    parser.add_argument(
        "--inference-variants",
        help="also score each trained model with other DetectorConfig inference settings, e.g. "
        "'proposals=100,proposal_nms=0.7;score_thresh=0.001'",
    )
    parser.add_argument("--retinanet-epochs", type=int, help="default: --epochs")
    parser.add_argument("--retinanet-backbone", default="resnet50")
    parser.add_argument("--workers", type=int, default=4, help="RetinaNet data loader workers")
    parser.add_argument("--speed", action="store_true", help="only time CPU inference (batch 1, 200 px)")
    parser.add_argument("--model", help="with --speed: time this trained model folder instead of random init")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--profile", action="store_true", help="with --speed: operator shares of our inference"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.weightings and args.weighting:
        parser.error("give --weighting (one run) or --weightings (one run each), not both")

    if args.speed:
        result: dict[str, Any] = {"protocol": "P2 speed", "speed": speed(args)}
    else:
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
        work = args.work or Path(tempfile.mkdtemp(prefix="p2-"))
        store = neu_store(work / "neu.db", args.data)
        result = {"protocol": "P2", "device": describe_device(args.device), "args": vars(args), "ours": {}}
        weightings = args.weightings.split(",") if args.weightings else [args.weighting or DEFAULT_WEIGHTING]
        for weighting in [] if args.no_ours else weightings:
            report = train_and_score(
                store,
                work / f"ours-{weighting}",
                args,
                inference_variants=args.inference_variants,
                weighting=weighting,
            )
            result["ours"][weighting] = report
            print(f"ours ({weighting}):", json.dumps(report, default=str), flush=True)
        if not args.no_retinanet:
            result["retinanet"] = run_retinanet(args, work / "retinanet")
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
