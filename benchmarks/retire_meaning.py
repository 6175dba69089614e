#!/usr/bin/env python3
"""What retiring a class with ``--meaning unnamed`` or ``other-types`` does to a detector trained after it.

NEU-DET with the P1 split; two classes (default: P3's NOVEL, pitted_surface and scratches) are
retired before training, so their TRAIN boxes stay as boxes without class: ``other-types`` lets
training pseudo-label them as the other classes (p >= 0.95, unless the in-batch open-set test calls
them unknown), ``unnamed`` never does. Then on all of TEST, with the labels of the full store as the
truth, each retired-class box is matched to the detections at the operating thresholds as ``quickstudy
eval`` matches (IoU >= 0.5, best score first, each box once): named as a known type (which),
``unknown``, or missed;
and the known classes' AP50, the known boxes called ``unknown``, and the ``unknown``
detections that overlap no TEST box (IoU < 0.5) per image, and of those the ones on clean background.

CPU (tiny): .venv/bin/python benchmarks/retire_meaning.py --meaning unnamed --arch tiny --epochs 12 --fit-all \\
                --threads 1 --work /tmp/retire-unnamed --json-out unnamed.json
            (and the same with --meaning other-types)
CPU smoke:  .venv/bin/python benchmarks/retire_meaning.py --meaning unnamed --arch tiny --epochs 1 --limit 48 \\
                --test-limit 24 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from p2_neu_detect import add_training_arguments, neu_store, training_options
from torchvision.ops import box_iou

from quickstudy.detect.evaluation import box_names, ground_truth
from quickstudy.detect.predictor import UNKNOWN, Predictor
from quickstudy.detect.training import train_detector
from quickstudy.evaluate.detection import coco_metrics
from quickstudy.evaluate.matching import on_clean_background
from quickstudy.labels.known import NEU_NOVEL
from quickstudy.labels.store import Store
from quickstudy.labels.taxonomy import RETIRE_MEANINGS
from quickstudy.train import describe_device


def names_given(
    predictor: Predictor, outputs: list, test: list, types: tuple[str, ...]
) -> dict[str, Counter[str]]:
    """For each class of ``types``, how its TEST boxes come out at the operating thresholds: the name
    ``quickstudy eval`` matches to each (a class or ``unknown``; :func:`~quickstudy.detect.evaluation.box_names`),
    or ``missed``."""
    called = box_names(test, [predictor.name_detections(out, None) for out in outputs])
    return {
        name: Counter(
            {"missed" if as_called is None else as_called: n for as_called, n in called.get(name, {}).items()}
        )
        for name in types
    }


def shares(given: dict[str, Counter[str]], known: tuple[str, ...]) -> dict[str, float]:
    """Of all boxes counted in ``given``: named as their own class, as another known class, ``unknown``,
    missed."""
    total = max(1, sum(sum(c.values()) for c in given.values()))
    counts: Counter[str] = Counter()
    for own, names in given.items():
        for name, n in names.items():
            key = "own" if name == own else "other_known" if name in known else name
            counts[key] += n
    return {key: counts[key] / total for key in ("own", "other_known", UNKNOWN, "missed")}


def unknown_on_background(predictor: Predictor, outputs: list, test: list) -> tuple[float, float]:
    """``unknown`` detections at the operating thresholds, per image: those that overlap no TEST box
    (IoU < 0.5), and among them those on clean background (at least half of the detection's area
    outside every TEST box, :func:`~quickstudy.evaluate.matching.on_clean_background`, which no box
    overlapping a TEST box at IoU >= 0.5 can be; the others are fragments of a true defect)."""
    alone = clean = 0
    for sample, out in zip(test, outputs, strict=True):
        unknown = [d.box for d in predictor.name_detections(out, None) if d.class_name == UNKNOWN]
        if not unknown:
            continue
        found = torch.tensor(unknown)
        truth = torch.tensor([b.xyxy for b in sample.boxes]).reshape(-1, 4)
        unmatched = (
            box_iou(found, truth).amax(1) < 0.5 if len(truth) else torch.ones(len(found), dtype=torch.bool)
        )
        alone += int(unmatched.sum())
        clean += int(on_clean_background(found, truth).sum())
    return alone / max(1, len(test)), clean / max(1, len(test))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument("--meaning", choices=RETIRE_MEANINGS, required=True)
    parser.add_argument("--retire", default=",".join(NEU_NOVEL), help="comma-separated classes to retire")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    retired = tuple(args.retire.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="retire-"))
    full = neu_store(work / "neu.db", args.data)
    path = work / f"retired-{args.meaning}.db"
    if not path.exists():
        copy = sqlite3.connect(path)
        full._conn.backup(copy)
        copy.close()
        with Store.open(path, create=False) as store:
            for name in retired:
                store.taxonomy.retire(name, args.meaning, author="benchmark")
    store = Store.open(path, create=False)
    flagged = sum(b.unnamed for s in store.samples("train") for b in s.boxes)
    result: dict[str, Any] = {
        "device": describe_device(args.device),
        "args": vars(args),
        "retired": retired,
        "train_boxes_flagged_unnamed": flagged,
    }
    model_dir = work / f"model-{args.meaning}"
    if not (model_dir / "versions").is_dir():
        started = time.perf_counter()
        train_detector(store, model_dir, **training_options(args))
        result["train_seconds"] = time.perf_counter() - started
    predictor = Predictor.from_dir(model_dir, device=args.device)
    test = full.samples("test")  # the truth: the labels before the retirement
    if args.test_limit:
        test = test[:: max(1, len(test) // args.test_limit)][: args.test_limit]
    known = tuple(predictor.model.classes)
    outputs = predictor.model.classify(predictor.proposals([s.path for s in test]))
    named, agnostic = ground_truth(test, list(known))
    ap = coco_metrics(named, outputs, list(known), agnostic)["AP50"]
    result["known_AP50"] = ap
    result["known_mAP50"] = statistics.mean(ap[c] or 0.0 for c in known)
    for name, types in (("retired", retired), ("known", known)):
        given = names_given(predictor, outputs, test, types)
        result[f"{name}_boxes"] = shares(given, known)
        result[f"{name}_boxes_named"] = {c: dict(n) for c, n in given.items()}
    alone, clean = unknown_on_background(predictor, outputs, test)
    result["unknown_on_background_per_image"] = alone
    result["unknown_on_clean_background_per_image"] = clean
    result["cpu_threads"] = torch.get_num_threads()
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=2, default=str))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
