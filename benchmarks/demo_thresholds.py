#!/usr/bin/env python3
"""What a learned type's threshold costs on a finished demo run: where its TEST boxes are lost.

For each type given (the demo's new type after step 3, the split's sub-types after step 4), read from
one model version of the run: the share of its TEST boxes (the built-in line's ``line/test`` VOC folder,
each box with its true type) that a proposal overlaps (IoU >= 0.5), on which the type scores highest of
all the (box, class) pairs there, and whose own score reaches the type's operating threshold; then the
share named right and the false alarms per TEST image (named detections on no true box, every type at
its threshold) as the model stands and with every given type's threshold replaced by each of
``--thresholds``. Matching is the demo's (``quickstudy eval``'s): IoU >= 0.5 at the operating thresholds.

    .venv/bin/quickstudy demo --out /tmp/demo
    .venv/bin/python benchmarks/demo_thresholds.py /tmp/demo --version 2 --types crack
    .venv/bin/python benchmarks/demo_thresholds.py /tmp/demo --version 4 --types scratch,inclusion \\
        --thresholds 0.2,line@1 [--json-out FILE]

A threshold written ``NAME@V`` is class NAME's operating threshold in version V (``line@1``: the split's
parent as the base model calibrated it on held-out images).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from demo_representation import line_boxes
from torchvision.ops import box_iou

from quickstudy.detect.evaluation import box_naming, proposal_recall
from quickstudy.detect.memory import ClassMemory
from quickstudy.detect.predictor import Predictor


def threshold_value(text: str, run: Path) -> float:
    """A number, or ``NAME@V``: class NAME's operating threshold in version V of the run's model."""
    if "@" not in text:
        return float(text)
    name, version = text.split("@")
    return Predictor.from_dir(run / "model", version=int(version)).operating[name]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a finished `quickstudy demo --out` folder (built-in line)")
    parser.add_argument("--version", type=int, required=True, help="the model version that knows the types")
    parser.add_argument("--types", required=True, help="comma-separated types to read")
    parser.add_argument("--thresholds", default="", help="comma-separated thresholds to try instead")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    types = args.types.split(",")
    predictor = Predictor.from_dir(args.run / "model", version=args.version)
    model = predictor.model
    test = line_boxes(args.run, "test")
    paths = sorted({str(path) for path, _, _ in test})
    truth = {p: [(box, t) for path, box, t in test if str(path) == p] for p in paths}
    proposals = predictor.proposals(paths)
    raw = model.classify(proposals)

    boxes: dict[str, dict[str, float]] = {}
    for name in types:
        index = model.classes.index(name)
        counts = {"boxes": 0, "proposed": 0, "scores_highest": 0, "reaches_threshold": 0}
        for path, proposal, out in zip(paths, proposals, raw, strict=True):
            for box, true_type in truth[path]:
                if true_type != name:
                    continue
                counts["boxes"] += 1
                counts["proposed"] += int(proposal_recall([[box]], [proposal]) == 1.0)
                on_box = box_iou(torch.tensor([box]), out["boxes"])[0] >= 0.5
                if on_box.any():
                    best = torch.nonzero(on_box).flatten()[out["scores"][on_box].argmax()]
                    counts["scores_highest"] += int(out["labels"][best]) == index
                    mine = on_box & (out["labels"] == index)
                    own = float(out["scores"][mine].max()) if mine.any() else 0.0
                    counts["reaches_threshold"] += own >= predictor.operating[name]
        n = max(1, counts["boxes"])
        boxes[name] = {"boxes": counts["boxes"], **{k: v / n for k, v in counts.items() if k != "boxes"}}

    samples = [
        SimpleNamespace(path=p, boxes=[SimpleNamespace(xyxy=box, allowed={t}) for box, t in truth[p]])
        for p in paths
    ]

    def naming(memory: ClassMemory) -> dict[str, float]:
        found = [memory.name_detections(out, None) for out in raw]
        outcomes = sum((box_naming(samples, found).get(t, Counter()) for t in types), Counter())
        alarms = 0
        for path, detections in zip(paths, found, strict=True):
            true_boxes = torch.tensor([box for box, _ in truth[path]]).reshape(-1, 4)
            for d in detections:
                if not true_boxes.numel() or float(box_iou(torch.tensor([d.box]), true_boxes).max()) < 0.5:
                    alarms += 1
        return {
            "named_right": outcomes["named_right"] / max(1, outcomes.total()),
            "false_alarms_per_image": alarms / len(paths),
        }

    memory = model.memory
    settings: dict[str, Any] = {
        "as learned": {"thresholds": {t: memory.operating[t] for t in types}, **naming(memory)}
    }
    for text in filter(None, args.thresholds.split(",")):
        value = threshold_value(text, args.run)
        changed = memory.with_thresholds({**memory.operating, **dict.fromkeys(types, value)})
        settings[f"all at {text}"] = {"thresholds": dict.fromkeys(types, value), **naming(changed)}

    print("| type | TEST boxes | proposed | scores highest | reaches its threshold |")
    print("|---|---|---|---|---|")
    for name, row in boxes.items():
        print(
            f"| {name} | {row['boxes']} | {row['proposed']:.2f} | {row['scores_highest']:.2f} | "
            f"{row['reaches_threshold']:.2f} |"
        )
    print("\n| thresholds | named right | false alarms per image |")
    print("|---|---|---|")
    for label, row in settings.items():
        shown = ", ".join(f"{t} {v:.3f}" for t, v in row["thresholds"].items())
        print(f"| {label} ({shown}) | {row['named_right']:.3f} | {row['false_alarms_per_image']:.2f} |")
    if args.json_out:
        result = {"run": str(args.run), "version": args.version, "boxes": boxes, "settings": settings}
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
