#!/usr/bin/env python3
"""P5: NEU-DET class split — `line` (inclusion + scratches) split into its two sub-classes.

Done through the label store as a user would: ``merge inclusion, scratches -> line`` (the coarse
taxonomy), then ``split line -> inclusion, scratches`` and relabel the boxes of K = 5 TRAIN images
of each sub-class (seed 0). Every other old ``line`` box now resolves to {inclusion, scratches}.
Four detectors, AP50 of the two sub-classes on TEST (ground truth: the original labels):

- ``partial``: quickstudy's way — the old boxes train with the partial label {inclusion, scratches};
- ``full``: every box with its true sub-class (the reference);
- ``ignore``: the old boxes' class is ignored (box-only; with today's defaults they are pseudo-labelled
  where the model is sure), only the 2 x K relabelled ones name a class;
- ``learn``: no retraining — the model trained on the coarse taxonomy learns the two sub-classes
  from the 2 x K relabelled images (``quickstudy learn --from-store``; ``line`` leaves the memory).

GPU (H100):  .venv/bin/python benchmarks/p5_class_split.py --device cuda --epochs 24 --json-out p5.json
CPU smoke:   .venv/bin/python benchmarks/p5_class_split.py --arch tiny --epochs 1 --limit 48 --test-limit 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from p2_neu_detect import add_training_arguments, neu_store, train_and_score, training_options

from quickstudy.detect.evaluation import evaluate_detector
from quickstudy.detect.fewshot import learn_class
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.labels.known import neu_class_of
from quickstudy.train import describe_device

SUBCLASSES = ["inclusion", "scratches"]
VARIANTS = ("partial", "ignore", "full", "learn")


def split_with_relabels(store: Any, k: int, seed: int, coarse: Callable[[], Any] | None = None) -> list[int]:
    """Merge the two sub-classes into ``line`` (then call ``coarse``, e.g. to train on the coarse
    taxonomy), split ``line`` again and relabel K images of each sub-class; their image ids."""
    truth = {b.box_id: next(iter(b.allowed)) for s in store.samples() for b in s.boxes if b.allowed}
    store.taxonomy.merge(SUBCLASSES, "line")
    if coarse is not None:
        coarse()
    store.taxonomy.split("line", SUBCLASSES)
    rng = np.random.default_rng(seed)
    relabelled = []
    for name in SUBCLASSES:
        candidates = [s for s in store.samples("train") if neu_class_of(s.path) == name]
        for index in rng.choice(len(candidates), size=k, replace=False):
            sample = candidates[int(index)]
            relabelled.append(sample.image_id)
            for box in sample.boxes:
                if box.allowed == frozenset(SUBCLASSES):
                    store.set_label(box.box_id, truth[box.box_id])
    return relabelled


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument("--k", type=int, default=5, help="relabelled TRAIN images per sub-class")
    parser.add_argument(
        "--full-model",
        type=Path,
        help="score this model folder as the full-label variant (P2's, same recipe)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which variants to train and score (learn trains the coarse model)",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    chosen = args.variants.split(",")
    if unknown := set(chosen) - set(VARIANTS):
        parser.error(f"--variants: {', '.join(sorted(unknown))} not among {', '.join(VARIANTS)}")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="p5-"))
    reference = neu_store(work / "neu.db", args.data)  # original labels: the full variant and TEST truth
    split = neu_store(work / "neu-split.db", args.data)

    def train_coarse() -> None:
        train_detector(split, work / "coarse", **training_options(args))

    relabelled = split_with_relabels(
        split, args.k, args.seed, coarse=train_coarse if "learn" in chosen else None
    )
    partial = split.samples("train")
    ignore = [
        dataclasses.replace(
            s,
            boxes=[dataclasses.replace(b, allowed=frozenset()) if len(b.allowed) > 1 else b for b in s.boxes],
        )
        for s in partial
    ]
    n_partial = sum(len(b.allowed) > 1 for s in partial for b in s.boxes)
    result: dict[str, Any] = {
        "protocol": "P5",
        "device": describe_device(args.device),
        "args": vars(args),
        "relabelled_images": relabelled,
        "partial_boxes": n_partial,
    }
    runs = {"partial": (split, partial), "ignore": (split, ignore), "full": (reference, None)}
    for name, (store, samples) in runs.items():
        if name not in chosen:
            continue
        # the split store's TEST boxes are partial too: score every variant against the original labels
        out = args.full_model if name == "full" and args.full_model else work / name
        report = train_and_score(store, out, args, samples=samples, test_store=reference)
        result[name] = report
        print(f"{name}: " + ", ".join(f"{c} AP50 {report['AP50'][c]}" for c in SUBCLASSES), flush=True)
    if "learn" in chosen:
        started = time.perf_counter()
        for name in SUBCLASSES:
            learn_class(work / "coarse", split, name, device=args.device)
        learn_seconds = time.perf_counter() - started
        test = reference.samples("test")
        if args.test_limit:
            test = test[:: max(1, len(test) // args.test_limit)][: args.test_limit]
        result["learn"] = evaluate_detector(Predictor.from_dir(work / "coarse", device=args.device), test)
        result["learn"]["learn_seconds"] = learn_seconds
    result["summary_AP50"] = {name: {c: result[name]["AP50"][c] for c in SUBCLASSES} for name in chosen}
    print(json.dumps(result["summary_AP50"], indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
