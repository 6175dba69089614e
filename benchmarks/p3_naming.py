#!/usr/bin/env python3
"""How well does a P3 model name NEU-DET's TEST boxes when it is given the true boxes?

Detection AP mixes finding a box with naming it. This script takes the naming alone: every TEST box of
one class is embedded where it truly lies and named by its nearest prototype (the class memory, as
``DefectDetector.classify`` names a detection), for the base model with the novel types' prototypes
made from K support boxes (``prototype``) and after ``learn``'s adaptation of the localizer and the
recognition head (``localizer_recognizer_chosen``; the localizer does not change what a given box is
called). Support draws and the replayed known boxes are P3's (``p3_neu_fewshot_detect.py``).

    .venv/bin/python benchmarks/p3_naming.py --base-model BASE --work DIR [--shots 10] [--seeds 0,1,2,3,4] \\
        [--data DIR] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from p2_neu_detect import DATA, neu_store
from p3_neu_fewshot_detect import add_novel, base_replay, draw_support

from quickstudy.detect.fewshot import pool_support
from quickstudy.detect.model import DefectDetector
from quickstudy.detect.predictor import Predictor
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL
from quickstudy.train import describe_device

METHODS = ("prototype", "localizer_recognizer_chosen")


def named_right(model: DefectDetector, boxes: list, classes: list[str]) -> dict[str, float]:
    """Share of each class's true boxes (``boxes``: (path, xyxy boxes) per image, ``classes`` in the same
    order, one per box) whose nearest prototype is their class's; ``novel`` and ``base`` the mean over
    those classes' boxes."""
    embeddings = model.recognize.project(pool_support(model, boxes)).cpu()
    nearest = [model.classes[i] for i in model.memory.similarity(embeddings).argmax(-1).tolist()]
    right = [n == c for n, c in zip(nearest, classes, strict=True)]
    shares = {
        name: statistics.mean(r for r, c in zip(right, classes, strict=True) if c == name)
        for name in (*NEU_BASE, *NEU_NOVEL)
    }
    for group, names in (("novel", NEU_NOVEL), ("base", NEU_BASE)):
        shares[group] = statistics.mean(r for r, c in zip(right, classes, strict=True) if c in names)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-model", type=Path, required=True, help="a P3 base model folder")
    parser.add_argument("--work", type=Path, required=True, help="folder of P3's store (made if missing)")
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = neu_store(args.work / "neu.db", args.data)
    base = Predictor.from_dir(args.base_model).model
    train, test = store.samples("train"), store.samples("test")
    single = [(s.path, [b for b in s.boxes if len(b.allowed) == 1]) for s in test]
    boxes = [(path, [b.xyxy for b in kept]) for path, kept in single if kept]
    classes = [next(iter(b.allowed)) for _, kept in single for b in kept]
    replay, known = base_replay(base, train)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    for seed in (int(v) for v in args.seeds.split(",")):
        support = draw_support(train, NEU_NOVEL, args.shots, seed)
        for method in METHODS:
            model = add_novel(base, method, support, {}, seed, replay, None, known)[0]
            runs[method].append(named_right(model, boxes, classes))
            print(f"K={args.shots} seed={seed} {method}: {json.dumps(runs[method][-1])}", flush=True)
    result: dict[str, Any] = {
        "protocol": "P3, naming TEST boxes given the true boxes",
        "device": describe_device("cpu"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "mean": {m: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()},
    }
    print(json.dumps(result["mean"], indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
