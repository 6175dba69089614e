#!/usr/bin/env python3
"""P4: NEU-DET with missing class labels — four ways to train when a fraction p of boxes lost their class.

In TRAIN, the class of a random fraction p of the boxes is removed (the box is kept; which: --seed). Then
quickstudy's detector is trained four ways and scored by mAP50 (pycocotools) on TEST:

- ``full``: every box keeps its class (the reference; trained once for all p);
- ``box_only``: the unlabelled boxes train localization only (quickstudy's way);
- ``delete_boxes``: the usual practice — unlabelled boxes are deleted (they become background);
- ``delete_images``: every image holding an unlabelled box is deleted.

GPU (H100):  .venv/bin/python benchmarks/p4_missing_labels.py --device cuda --epochs 24 --json-out p4.json
CPU smoke:   .venv/bin/python benchmarks/p4_missing_labels.py --arch tiny --epochs 1 --limit 48 --test-limit 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from p2_neu_detect import add_training_arguments, neu_store, train_and_score

from quickstudy.train import describe_device


def drop_classes(samples: list, fraction: float, seed: int) -> tuple[list, set[int]]:
    """Samples with the class of ``fraction`` of all boxes removed, and the ids of those boxes."""
    box_ids = sorted(b.box_id for s in samples for b in s.boxes)
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(box_ids, size=round(fraction * len(box_ids)), replace=False).tolist())
    edited = [
        dataclasses.replace(
            s,
            boxes=[
                dataclasses.replace(b, allowed=frozenset()) if b.box_id in dropped else b for b in s.boxes
            ],
        )
        for s in samples
    ]
    return edited, dropped


VARIANTS = ("box_only", "delete_boxes", "delete_images")


def variants(samples: list, fraction: float, seed: int) -> dict[str, list]:
    edited, dropped = drop_classes(samples, fraction, seed)
    return {
        "box_only": edited,
        "delete_boxes": [
            dataclasses.replace(s, boxes=[b for b in s.boxes if b.box_id not in dropped]) for s in samples
        ],
        "delete_images": [s for s in samples if not any(b.box_id in dropped for b in s.boxes)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument("--fractions", default="0.5,0.9")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which of the edited-label variants to train (full is always scored)",
    )
    parser.add_argument(
        "--full-model",
        type=Path,
        help="score this model folder as the full-label variant (P2's, same recipe)",
    )
    parser.add_argument(
        "--skip-full",
        action="store_true",
        help="do not score the full-label variant (it was trained and scored before, e.g. by P2 with the same seed)",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    chosen = args.variants.split(",")
    if unknown := set(chosen) - set(VARIANTS):
        parser.error(f"--variants: {', '.join(sorted(unknown))} not among {', '.join(VARIANTS)}")
    if args.skip_full and args.full_model:
        parser.error("--skip-full and --full-model: choose one")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="p4-"))
    store = neu_store(work / "neu.db", args.data)
    train = store.samples("train")
    result: dict[str, Any] = {"protocol": "P4", "device": describe_device(args.device), "args": vars(args)}
    if not args.skip_full:
        result["full"] = train_and_score(store, args.full_model or work / "full", args, samples=train)
        print("full:", result["full"]["mAP50"], flush=True)
    for fraction in (float(f) for f in args.fractions.split(",")):
        row: dict[str, Any] = {}
        edited = variants(train, fraction, args.seed)
        for name in chosen:
            samples = edited[name]
            report = train_and_score(store, work / f"p{fraction}-{name}", args, samples=samples)
            report["n_train_images"] = len(samples)
            row[name] = report
            print(f"p={fraction} {name}: mAP50 {report['mAP50']:.3f}", flush=True)
        result[f"p={fraction}"] = row
    summary = {"full": result["full"]["mAP50"]} if "full" in result else {}
    for key, row in result.items():
        if key.startswith("p="):
            summary.update({f"{key} {name}": r["mAP50"] for name, r in row.items()})
    result["summary_mAP50"] = summary
    text = json.dumps(result, indent=2, default=str)
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
