#!/usr/bin/env python3
"""P9-new: Crack and Fray as new types on magnetic tile (DESIGN.md P9-new), with today's ``learn``.

Base training sees only the TRAIN images of Blowhole, Break, Uneven and Free (``train_detector(classes=
...)`` keeps the images whose boxes are all of those types; Free images hold none). Before learning, each
new-type TEST box is counted as reported ``unknown``, named as a known type, or missed at the operating
thresholds. Then K TRAIN images of each new type (drawn with the seed) are given to ``learn_class`` — the same call as ``quickstudy learn --class NAME --images ...`` — and
the model is evaluated again: AP50 of each new type, the base types' AP50 before and after, and the
image-level precision and recall of each new type. Every number is ``quickstudy eval``'s, the naming of
the new types' boxes included (its ``naming``: each true box matched one to one, highest score first).

    .venv/bin/python benchmarks/p9_new_types.py --arch tiny --epochs 10 --shots 5 --seed 0 --out /tmp/p9new
    GPU: ... --device cuda --arch small --epochs 24 (benchmarks/gpu_suite.sh unknowns)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from quickstudy.cli._common import non_negative, share
from quickstudy.detect.evaluation import detector_evaluation
from quickstudy.detect.fewshot import learn_class
from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.labels.formats import import_magnetic_tile
from quickstudy.labels.store import Store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BASE = ("Blowhole", "Break", "Uneven")
NEW = ("Crack", "Fray")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="tiny")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="draws the K support images of each new type")
    parser.add_argument(
        "--synthetic-defects", type=float, default=0.0, help="as `quickstudy train --synthetic-defects`"
    )
    parser.add_argument("--squeeze", type=share, default=0.0, help="as `quickstudy train --squeeze`")
    parser.add_argument(
        "--proposals-per-level",
        type=non_negative,
        default=0,
        help="as `quickstudy train --proposals-per-level`",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    store = Store.open(args.out / "mt.qs")
    if not store.images():
        import_magnetic_tile(store, args.data_root / "magnetic-tile")
    # the training options that differ from train's defaults, in the model folder's name
    options = f"-synthetic{args.synthetic_defects:g}" if args.synthetic_defects else ""
    options += f"-squeeze{args.squeeze:g}" if args.squeeze else ""
    options += f"-per-level{args.proposals_per_level}" if args.proposals_per_level else ""
    model_dir = args.out / f"base-{args.arch}-{args.image_size}-e{args.epochs}{options}"
    started = time.perf_counter()
    if not model_dir.exists():
        config = DetectorConfig(
            **{**ARCHITECTURES[args.arch], "image_size": args.image_size},
            proposals_per_level=args.proposals_per_level,
        )
        train_detector(
            store,
            model_dir,
            epochs=args.epochs,
            config=config,
            classes=list(BASE),
            device=args.device,
            synthetic_defects=args.synthetic_defects,
            squeeze=args.squeeze,
        )
    train_seconds = time.perf_counter() - started
    test = store.samples("test")
    before = Predictor.from_dir(model_dir, device=args.device)
    before_metrics = detector_evaluation(before, test)[0].metrics
    naming_before = {name: before_metrics["naming"].get(name) for name in NEW}

    rng = np.random.default_rng(args.seed)
    support: dict[str, list[str]] = {}
    learn_seconds = 0.0
    for name in NEW:
        holding = [s for s in store.samples("train") if any(b.allowed == {name} for b in s.boxes)]
        picked = sorted(rng.choice(len(holding), size=min(args.shots, len(holding)), replace=False))
        support[name] = [str(holding[i].path) for i in picked]
        started = time.perf_counter()
        learn_class(model_dir, store, name, images=support[name], device=args.device)
        learn_seconds += time.perf_counter() - started
    after = Predictor.from_dir(model_dir, device=args.device)
    after_metrics = detector_evaluation(after, test)[0].metrics
    report = {
        "protocol": "P9-new",
        "command": " ".join(sys.argv),
        "arch": args.arch,
        "device": args.device,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "shots": args.shots,
        "squeeze": args.squeeze,
        "proposals_per_level": args.proposals_per_level,
        "seed": args.seed,
        "base_train_seconds": train_seconds,
        "learn_seconds": learn_seconds,
        "support": support,
        "before": {
            "base_AP50": {c: before_metrics["AP50"][c] for c in BASE},
            "new_type_boxes": naming_before,
        },
        "after": {
            "AP50": after_metrics["AP50"],
            "image_precision": {c: after_metrics["image_precision"][c] for c in NEW},
            "image_recall": {c: after_metrics["image_recall"][c] for c in NEW},
            "new_type_boxes": {name: after_metrics["naming"].get(name) for name in NEW},
        },
    }
    (args.out / f"p9new-seed{args.seed}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("before", "after")}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
