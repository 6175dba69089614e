#!/usr/bin/env python3
"""How well does a model's normality memory tell defective images from defect-free ones?

Each image of a store split is scored by its highest abnormality (the memory's distance map over its
threshold, ``NormalityMemory.score_map``); the image-level AUROC (anomalib's ``image_AUROC``) compares
the images holding a box with the images checked as defect-free, overall and per type (an image counts
for the type of its first box). Also the share of true boxes whose abnormality reaches 1, the memory's
edge of normal, per type: what the open-set test can call abnormal at all.

    .venv/bin/python benchmarks/p9_new_types.py --arch tiny --epochs 10 --out /tmp/p9new     # a base model
    .venv/bin/python benchmarks/normality_auroc.py --model /tmp/p9new/base-tiny-320-e10 --version 1 \\
        --store /tmp/p9new/mt.qs [--split test] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from quickstudy.detect.data import letterbox, read_for_model
from quickstudy.detect.predictor import Predictor
from quickstudy.labels.store import Store


def auroc(positive: list[float], negative: list[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann–Whitney); None without both."""
    if not positive or not negative:
        return None
    p, n = torch.tensor(positive)[:, None], torch.tensor(negative)[None]
    return float(((p > n).float() + 0.5 * (p == n).float()).mean())


def type_of(allowed: frozenset[str]) -> str:
    return next(iter(allowed)) if len(allowed) == 1 else "(no single type)"


@torch.no_grad()
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--version", type=int, help="model version (default: the current one)")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Predictor.from_dir(args.model, version=args.version).model
    memory = model.normality
    if memory is None:
        raise SystemExit(f"{args.model}: this model has no normality memory")
    store = Store.open(args.store, create=False)
    image_score: dict[str, list[float]] = defaultdict(list)  # type (or "defect-free") -> image scores
    box_flagged: dict[str, list[bool]] = defaultdict(list)
    for sample in store.samples(args.split):
        if not sample.boxes and not sample.checked:
            continue  # neither defective nor known to be defect-free
        image, scale = letterbox(
            read_for_model(sample.path, model.config.channels)[0], model.config.image_size
        )
        scores = memory.score_map(model.features(image[None].float() / 255))[0]
        kind = type_of(sample.boxes[0].allowed) if sample.boxes else "defect-free"
        if sample.boxes:
            boxes = torch.tensor([b.xyxy for b in sample.boxes], dtype=torch.float32) * scale
            for box, value in zip(sample.boxes, memory.box_abnormality(scores, boxes).tolist(), strict=True):
                box_flagged[type_of(box.allowed)].append(value >= 1)
        image_score[kind].append(float(scores.max()))
    free = image_score.pop("defect-free", [])
    defective = [v for values in image_score.values() for v in values]
    result: dict[str, Any] = {
        "model": str(args.model),
        "version": args.version,
        "split": args.split,
        "images": {"defective": len(defective), "defect_free": len(free)},
        "image_auroc": auroc(defective, free),
        "image_auroc_per_type": {name: auroc(values, free) for name, values in sorted(image_score.items())},
        "boxes_abnormal_per_type": {name: sum(v) / len(v) for name, v in sorted(box_flagged.items())},
    }
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
