#!/usr/bin/env python3
"""P2: NEU-DET with full labels — quickstudy's detector against torchvision RetinaNet, in one run.

Trains quickstudy's detector on the P1 TRAIN split (the n % 5 == 1 images held out for calibration)
with each multi-task weighting named in --weightings (the default weighting is chosen from this
comparison), evaluates on TEST with pycocotools (mAP, mAP50, AP50 per class, AR@100 class-agnostic,
image-level precision/recall at the thresholds calibrated on the held-out images) and also with the
anchor's numpy metrics (``../shared/anchors/neu_metrics.py``), then runs the anchor RetinaNet
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

from quickstudy.detect.data import AUGMENTATIONS, DEFAULT_AUGMENT, DEFAULT_PHOTOMETRIC
from quickstudy.detect.evaluation import evaluate_detector
from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import DEFAULT_BATCH_SIZE, DEFAULT_LR, split_validation, train_detector
from quickstudy.labels.known import NEU_CLASSES, import_neu_det
from quickstudy.labels.store import Store
from quickstudy.train import describe_device

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"
DATA = ROOT.parent / "shared" / "data" / "neu-det"


def neu_store(path: Path, data: Path) -> Store:
    """A label store holding all of NEU-DET with the P1 split tagged (created once per path)."""
    fresh = not path.exists()
    store = Store.open(path)
    if fresh:
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
        train_detector(store, out, samples=samples, **training_options(args), **kw)
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
    images = torch.rand(args.batch_size, 1, 200, 200)
    boxes = torch.tensor([[[20.0, 30, 120, 90], [50, 100, 190, 190]]]).expand(args.batch_size, 2, 4)
    valid = torch.ones(args.batch_size, 2, dtype=torch.bool)
    allowed = torch.zeros(args.batch_size * 2, len(NEU_CLASSES), dtype=torch.bool)
    allowed[:, 0] = True
    index = torch.arange(args.batch_size).repeat_interleave(2)[:, None].float()
    targets = {
        "boxes": boxes,
        "valid": valid,
        "rois": torch.cat([index, boxes.reshape(-1, 4)], 1),
        "roi_allowed": allowed,
        "roi_support": torch.arange(args.batch_size * 2) % 2 == 0,
    }
    steps = 3
    t = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(images, targets)
        assert isinstance(out, dict)
        (out["loss_localize"] + out["loss_recognize"]).backward()
        optimizer.step()
    result["ours_train_images_per_second"] = steps * args.batch_size / (time.perf_counter() - t)
    result["threads"] = args.threads
    result["device"] = describe_device("cpu")
    return result


def _probability_or_off(text: str) -> float | None:
    if text == "off":
        return None
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] or off, got {value}")
    return value


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


# DetectorConfig fields a benchmark may set (``--image-size`` ...), defaults from DetectorConfig
NETWORK_OPTIONS: dict[str, dict[str, Any]] = {
    "image_size": {"type": int, "help": "the network's input side (NEU: 200 px)"},
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
    "pseudo_label_confidence": {
        "type": _probability_or_off,
        "help": "P|off: a box without class also learns the class it is predicted as at probability P",
    },
    "level_by": {
        "choices": ["reach", "area"],
        "help": "a box's size for its level: a location's farthest edge (FCOS) or the box's sqrt(w*h)/2",
    },
}


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """``train_detector`` keywords from the options of :func:`add_training_arguments`."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "limit": args.limit,
        "device": args.device,
        "config": DetectorConfig(
            **{**ARCHITECTURES[args.arch], **{field: getattr(args, field) for field in NETWORK_OPTIONS}}
        ),
        "init": args.init,
        "hold_out": not args.fit_all,
        "seed": args.seed,
        "augment": args.augment,
        "photometric": args.photometric,
    }


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every NEU-DET detector benchmark shares: data, work folder, device, recipe, sizes."""
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--work", type=Path, help="folder for the store and models (default: a temp dir)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--limit", type=int, help="first N training images only (smoke runs)")
    parser.add_argument("--test-limit", type=int, help="evaluate on N test images only (smoke runs)")
    parser.add_argument(
        "--score-on",
        choices=["test", "validation"],
        default="test",
        help="score on TEST, or on the held-out TRAIN images (P1's model-selection set; of a model "
        "trained without --fit-all) to choose inference settings without looking at TEST",
    )
    parser.add_argument("--arch", default="small", choices=sorted(ARCHITECTURES), help="tiny for smoke runs")
    for field, options in NETWORK_OPTIONS.items():
        parser.add_argument(
            "--" + field.replace("_", "-"), dest=field, default=getattr(DetectorConfig, field), **options
        )
    parser.add_argument(
        "--fit-all",
        action="store_true",
        help="fit every TRAIN image, as the anchors do (thresholds then calibrated on fitted images)",
    )
    parser.add_argument(
        "--augment", choices=AUGMENTATIONS, default=DEFAULT_AUGMENT, help="geometric augmentation"
    )
    parser.add_argument(
        "--photometric",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PHOTOMETRIC,
        help="brightness and contrast changes on top of the geometric augmentation",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (P4, P5: also which boxes are edited)"
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="backbone from this `quickstudy pretrain --backbone detector --arch A` run (P*-u variants)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument("--weightings", default="uncertainty,equal", help="comma-separated, one run each")
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

    if args.speed:
        result: dict[str, Any] = {"protocol": "P2 speed", "speed": speed(args)}
    else:
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
        work = args.work or Path(tempfile.mkdtemp(prefix="p2-"))
        store = neu_store(work / "neu.db", args.data)
        result = {"protocol": "P2", "device": describe_device(args.device), "args": vars(args), "ours": {}}
        for weighting in [] if args.no_ours else args.weightings.split(","):
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
