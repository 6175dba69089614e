#!/usr/bin/env python3
"""P9: magnetic tile, real frames — quickstudy's detector against YOLOv8n from scratch, in one run.

Imports the set with ``quickstudy.labels.formats.import_magnetic_tile`` (P9 split, boxes from the masks,
``MT_Free`` checked and defect-free), trains quickstudy's detector on TRAIN (every fifth TRAIN image held
out to calibrate its thresholds, as ``quickstudy train`` does) while YOLOv8n trains in a second process
on the same split with the same input size and epochs (``benchmarks/p9_yolo_anchor.py``), then scores both
with the same code (``quickstudy.evaluate``, what ``quickstudy eval --json`` prints): COCO mAP50 and AP50
per class; image-level "defect present" precision and recall at the operating threshold; the false-alarm
rate on the TEST ``MT_Free`` images at that threshold; the recall at a 1% false-alarm rate; ms per
megapixel on the CPU. YOLO's operating threshold is Ultralytics' default ``conf=0.25``.

The same numbers for quickstudy alone, from the command line:
    quickstudy data import --format magnetic-tile --data-root ../shared/data --store mt.qs
    quickstudy train --store mt.qs --out runs/mt --image-size 320 --epochs 20
    quickstudy eval --model runs/mt --store mt.qs --split test --json

Run (CPU, one thread per model; YOLO needs the packages of p9_yolo_anchor.py's docstring):
    PYTHONPATH=/work/yolo-pkgs .venv/bin/python benchmarks/p9_magnetic_tile.py --epochs 20 \\
        --image-size 320 --out benchmarks/results/cpu-2026-12-06/p9
Smoke: ... --epochs 1 --limit 60 --no-anchor --out /tmp/p9
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quickstudy.detect.evaluation import detector_evaluation, ground_truth
from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.evaluate.detection import evaluate_predictions
from quickstudy.labels.formats import import_magnetic_tile
from quickstudy.labels.store import Store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
YOLO_CONF = 0.25  # Ultralytics' default predict threshold: YOLO's operating point


def _round_robin(samples: list[Any], limit: int) -> list[Any]:
    """The first ``limit`` samples taken in turn from each tile type, so a smoke run holds every type."""
    by_type: dict[str, list[Any]] = {}
    for sample in samples:
        by_type.setdefault(sample.path.parent.parent.name, []).append(sample)
    picked: list[Any] = []
    while len(picked) < limit and any(by_type.values()):
        for group in by_type.values():
            if group and len(picked) < limit:
                picked.append(group.pop(0))
    return picked


def _megapixels(samples: list[Any]) -> float:
    return sum(s.width * s.height for s in samples) / 1e6


def _start_anchor(args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "p9_yolo_anchor.py"),
        "--data-root",
        str(args.data_root),
        "--epochs",
        str(args.epochs),
        "--imgsz",
        str(args.image_size),
        "--threads",
        str(args.threads),
        "--out",
        str(out / "yolo"),
    ] + (["--limit", str(args.limit)] if args.limit else [])
    log = open(out / "yolo.log", "wb")  # noqa: SIM115 -- the child writes it until it ends
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def _anchor_metrics(result: dict[str, Any], test: list[Any], classes: list[str]) -> dict[str, Any]:
    """YOLO's TEST detections scored by the same code as ours."""
    index = {name: i for i, name in enumerate(classes)}
    preds = []
    for sample in test:
        found = result["detections"].get(str(sample.path), [])
        preds.append(
            {
                "boxes": torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor([d["score"] for d in found], dtype=torch.float32),
                "labels": torch.tensor([index[d["class"]] for d in found], dtype=torch.int64),
            }
        )
    named, agnostic = ground_truth(test, classes)
    defect_free = [s.checked and not s.boxes for s in test]
    operating = dict.fromkeys(classes, YOLO_CONF)
    metrics = evaluate_predictions(named, preds, classes, operating, agnostic, defect_free).metrics
    metrics["ms_per_megapixel"] = result.get("ms_per_megapixel")
    metrics["train_seconds"] = result.get("train_seconds")
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True, help="folder for the store, models and p9.json")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=320, help="input size of both models (long side)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model")
    parser.add_argument("--limit", type=int, default=0, help="smoke run: this many TRAIN and TEST images")
    parser.add_argument("--no-anchor", action="store_true", help="skip YOLOv8n")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    anchor = None if args.no_anchor else _start_anchor(args, args.out)

    store_path = args.out / "mt.qs"
    store = Store.open(store_path)
    if not store.images():
        import_magnetic_tile(store, args.data_root / "magnetic-tile")
    classes = store.classes()
    train = [s for s in store.samples("train") if s.checked]
    test = store.samples("test")
    if args.limit:
        train, test = _round_robin(train, args.limit), _round_robin(test, args.limit)

    config = DetectorConfig(**{**ARCHITECTURES[args.arch], "image_size": args.image_size})
    model_dir = args.out / f"quickstudy-{args.arch}-{args.image_size}-e{args.epochs}-s{args.seed}"
    started = time.perf_counter()
    train_detector(store, model_dir, epochs=args.epochs, config=config, seed=args.seed, samples=train)
    train_seconds = time.perf_counter() - started
    predictor = Predictor.from_dir(model_dir)
    predictor.raw([s.path for s in test[:2]])  # warm-up before timing
    evaluation, _ = detector_evaluation(predictor, test)
    ours = evaluation.metrics
    ours["train_seconds"] = train_seconds
    ours["ms_per_megapixel"] = ours["ms_per_image"] * len(test) / _megapixels(test)

    report: dict[str, Any] = {
        "protocol": "P9",
        "command": " ".join(sys.argv),
        "epochs": args.epochs,
        "image_size": args.image_size,
        "threads": args.threads,
        "train_images": len(train),
        "test_images": len(test),
        "test_defect_free_images": sum(s.checked and not s.boxes for s in test),
        "quickstudy": {"arch": args.arch, **ours},
    }
    if anchor is not None:
        anchor.wait()
        result_file = args.out / "yolo" / "yolo_p9.json"
        if anchor.returncode != 0 or not result_file.exists():
            report["yolov8n"] = {"error": f"exit {anchor.returncode}; see {args.out / 'yolo.log'}"}
        else:
            report["yolov8n"] = _anchor_metrics(json.loads(result_file.read_text()), test, classes)
    (args.out / "p9.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    for name in ("quickstudy", "yolov8n"):
        if name in report and "mAP50" in report[name]:
            m = report[name]
            present = m["defect_present"]
            print(
                f"{name:10s} mAP50 {m['mAP50']:.3f}  AP50 "
                + " ".join(f"{c} {np.nan if v is None else v:.3f}" for c, v in m["AP50"].items())
                + f"  defect present P/R {present['precision']} / {present['recall']}"
                + f"  false alarms {present.get('false_alarm_rate')}"
                + f"  recall@1%FA {present.get('recall_at_1pct_false_alarms')}"
                + f"  {m['ms_per_megapixel']:.0f} ms/MP"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
