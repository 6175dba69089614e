#!/usr/bin/env python3
"""P3 / P3-u: does ``quickstudy learn --transductive`` help? The new prototypes of pitted_surface and
scratches from K support images each, then refined on confident proposals of up to 200 other TRAIN
images read as images only (``detect.fewshot.refine_on_images``, what ``learn --transductive N`` runs),
against the prototype alone, on the same base model and supports; nAP50, bAP50 and novel image-level
precision/recall on all of TEST (the scoring of ``p3_neu_fewshot_detect.py``, imported from it).

CPU:  .venv/bin/python benchmarks/p3_transductive.py --base-model /work/p3run/base --work /work/p3run \\
          --shots 5 --seeds 0,1,2,3,4 --steps 1,3 --threads 1 --json-out p3-transductive.json
``--localizer`` adapts the localization head to the supports first (``learn --adapt-localizer``, which
runs before the refinement in ``learn_class`` too), with the base model's fitted TRAIN images replayed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from p2_neu_detect import DATA, neu_store
from p3_neu_fewshot_detect import base_replay, draw_support, marked_boxes, novel_thresholds, score

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.fewshot import (
    adapt_localizer,
    add_classes,
    embed_support,
    refine_on_images,
    unlabelled_images,
)
from quickstudy.detect.predictor import Predictor
from quickstudy.labels.known import NEU_NOVEL
from quickstudy.train import describe_device


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base-model", type=Path, required=True, help="a P3 base model (trained on BASE only)"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the NEU-DET store (neu.db)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--shots", default="5")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", default="1,3", help="refinement steps to compare with none")
    parser.add_argument("--localizer", action="store_true", help="adapt the localizer to the supports first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = neu_store(args.work / "neu.db", args.data)
    predictor = Predictor.from_dir(args.base_model)
    base = predictor.model
    train, test = store.samples("train"), store.samples("test")
    test_paths = [s.path for s in test]
    proposals = predictor.proposals(test_paths)
    replay = base_replay(base, train, known=False)[0] if args.localizer else None
    steps = [0, *(int(v) for v in args.steps.split(","))]
    runs: dict[str, list[dict[str, Any]]] = {}
    for k in (int(v) for v in args.shots.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            support = draw_support(train, NEU_NOVEL, k, seed)
            marked = [box for name, s in support.items() for box in marked_boxes(s, name)]
            images = unlabelled_images(store, marked)
            adapted, scored = base, proposals
            if args.localizer:
                adapted = copy.deepcopy(base)
                chosen = [s for samples in support.values() for s in samples]
                # the classes the learned head is tuned for; each run below makes their prototypes again
                add_classes(
                    adapted, {name: embed_support(base, marked_boxes(s, name)) for name, s in support.items()}
                )
                adapt_localizer(
                    adapted,
                    DetectionSet.from_samples(chosen, [], base.config.image_size),
                    replay,
                    classes=list(support),
                    seed=seed,
                )
                scored = Predictor(adapted).proposals(test_paths)
            for n in steps:
                model = copy.deepcopy(adapted)
                started = time.perf_counter()
                embedded = {name: embed_support(model, marked_boxes(s, name)) for name, s in support.items()}
                add_classes(model, embedded)
                used = 0
                if n:
                    counts = [len(e) for e in embedded.values()]
                    used = refine_on_images(model, list(embedded), counts, images, n)
                seconds = time.perf_counter() - started
                thresholds = novel_thresholds(model, support, store)
                learned = {**predictor.operating, **{c: t for c, (t, _) in thresholds.items()}}
                report = score(model.classes, model.classify(scored), scored, test, learned)
                report.update(seconds=seconds, proposals_used=used, seed=seed)
                runs.setdefault(f"K={k} steps={n}", []).append(report)
                print(
                    f"K={k} seed={seed} steps={n}: nAP50 {report['nAP50']:.4f} bAP50 {report['bAP50']:.4f} "
                    f"({used} proposals, {seconds:.1f} s)",
                    flush=True,
                )
    summary = {
        key: {
            metric: {
                "mean": statistics.mean(r[metric] for r in reports),
                "std": statistics.pstdev(r[metric] for r in reports),
            }
            for metric in ("nAP50", "bAP50")
        }
        | {
            f"image_{kind}_{c}": statistics.mean(r[f"image_{kind}"][c] or 0.0 for r in reports)
            for kind in ("precision", "recall")
            for c in NEU_NOVEL
        }
        for key, reports in runs.items()
    }
    result = {
        "protocol": "P3 (learn --transductive)",
        "device": describe_device("cpu"),
        "cpu_threads": torch.get_num_threads(),
        "args": vars(args),
        "runs": runs,
        "summary": summary,
    }
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
