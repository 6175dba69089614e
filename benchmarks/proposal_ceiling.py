#!/usr/bin/env python3
"""How many of NEU-DET's novel TEST boxes could a P3 base model propose at all, and does its normality
memory find the ones its localizer misses?

P3 counts a novel TEST box as proposed when one of the detector's usual proposals overlaps it at IoU >= 0.5
(the issue's goal: 80% before learning). This script reads one base model's TEST images once and gives,
for the novel types' boxes (together and per type) and the base types', the share that each set of boxes
overlaps at IoU >= 0.5, and per novel type the shape of the boxes that no location's box reaches:

- ``every location``: the box the localizer regresses at every location of every level, whatever its
  score (``DefectDetector.dense_boxes``): the ceiling of anything that re-ranks the localizer's boxes;
- ``top N``: N proposals per image by score alone (candidates above the score floor, then NMS);
- ``top N, n per level``: each localizer level's best n kept ahead of the rest
  (``DetectorConfig.proposals_per_level``);
- ``top 50 + regions`` (the model's own proposals, 50 by default): with the normality memory's abnormal regions (connected cells at abnormality
  >= 1, boxed; ``DetectorConfig.normality_proposals``);
- ``top 50 + M abnormal``: with M more of the localizer's boxes, those at the most abnormal locations
  (each location read at its cell of the normality map), after NMS.

    .venv/bin/python benchmarks/proposal_ceiling.py MODEL [--data DIR] [--json-out FILE]

MODEL is a P3 base model folder (trained without the novel types, with a normality memory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from p2_neu_detect import DATA, neu_store
from torchvision.ops import box_iou

from quickstudy.detect.data import letterbox, read_for_model
from quickstudy.detect.model import DefectDetector, ranked_proposals
from quickstudy.detect.predictor import Predictor
from quickstudy.errors import QuickstudyError
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL
from quickstudy.train import describe_device

COUNTS = (50, 100, 200)
PER_LEVEL = ((50, 5), (50, 10), (100, 10), (100, 20))
ABNORMAL_EXTRA = (20, 50)


@torch.no_grad()
def box_sets(model: DefectDetector, path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The sets of boxes the module's docstring lists for one image (model input pixels), and its scale."""
    cfg, normality = model.config, model.normality
    assert normality is not None  # main refuses a model without one
    image, scale = letterbox(read_for_model(path, cfg.channels)[0], cfg.image_size)
    size = image.shape[-2:]
    features = model.features(image[None].float().to(model.device) / 255)
    dense = model.localize(features)
    boxes, scores = (t[0].cpu() for t in model.dense_boxes(features, dense, size))
    abnormal = normality.score_map(features)[0].cpu()
    points = model.localize.points([(f.shape[-2], f.shape[-1]) for f in features]).cpu()
    h, w = abnormal.shape
    cell_y = (points[:, 1] / normality.stride).long().clamp(0, h - 1)
    cell_x = (points[:, 0] / normality.stride).long().clamp(0, w - 1)
    at_location = abnormal[cell_y, cell_x]
    sets = {"every location": boxes}
    by_score = replace(cfg, proposals_per_level=0)
    for count in COUNTS:
        sets[f"top {count}"] = boxes[ranked_proposals(boxes, scores, by_score, count, cfg.score_thresh)]
    levels = model.localize.level_sizes([(f.shape[-2], f.shape[-1]) for f in features])
    for count, per_level in PER_LEVEL:
        shared = replace(cfg, proposals_per_level=per_level)
        chosen = ranked_proposals(boxes, scores, shared, count, cfg.score_thresh, levels)
        sets[f"top {count}, {per_level} per level"] = boxes[chosen]
    usual = boxes[ranked_proposals(boxes, scores, cfg, cfg.proposals, cfg.score_thresh, levels)]
    regions, _ = normality.regions(abnormal, size)
    sets[f"top {cfg.proposals} + regions"] = torch.cat([usual, regions])
    # ties of abnormality (one cell holds several locations) broken by the localizer's score
    ranking = at_location + 1e-3 * scores
    for extra in ABNORMAL_EXTRA:
        sets[f"top {cfg.proposals} + {extra} abnormal"] = torch.cat(
            [usual, boxes[ranked_proposals(boxes, ranking, cfg, extra)]]
        )
    return sets, scale


def base_model_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of a script that reads one P3 base model on NEU-DET's TEST images."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a P3 base model folder")
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--work", type=Path, help="folder for the label store (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    return parser


def base_model_and_test(args: argparse.Namespace) -> tuple[Predictor, list[Any]]:
    """The P3 base model of ``args.model`` (refused in one line when it is not one with a normality memory)
    and NEU-DET's TEST samples, on ``args.threads`` torch threads."""
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="p3-base-"))
    test = neu_store(work / "neu.db", args.data).samples("test")
    try:
        predictor = Predictor.from_dir(args.model)
    except QuickstudyError as error:
        raise SystemExit(str(error)) from None
    if predictor.model.normality is None:
        raise SystemExit(f"{args.model}: the model has no normality memory (trained before it existed)")
    return predictor, test


def boxes_of(sample: Any, types: set[str]) -> torch.Tensor:
    """``[N, 4]`` the boxes of ``sample`` (image pixels) that may be of one of ``types``."""
    return torch.tensor([b.xyxy for b in sample.boxes if b.allowed & types], dtype=torch.float32).reshape(
        -1, 4
    )


def main() -> int:
    args = base_model_parser(__doc__).parse_args()
    predictor, test = base_model_and_test(args)
    model = predictor.model
    groups = {"novel": set(NEU_NOVEL), "base": set(NEU_BASE), **{name: {name} for name in NEU_NOVEL}}
    found: dict[str, dict[str, list[bool]]] = {group: {} for group in groups}
    # per novel type, each box's elongation (long side / short side) and best IoU with any location's box
    shapes: dict[str, list[tuple[float, float]]] = {name: [] for name in NEU_NOVEL}
    for sample in test:
        sets, scale = box_sets(model, sample.path)
        for group, types in groups.items():
            true_boxes = boxes_of(sample, types) * scale
            if not len(true_boxes):
                continue
            best: dict[str, torch.Tensor] = {}
            for name, boxes in sets.items():
                best[name] = (
                    box_iou(true_boxes, boxes).amax(1) if len(boxes) else torch.zeros(len(true_boxes))
                )
                found[group].setdefault(name, []).extend((best[name] >= 0.5).tolist())
            if group in shapes:
                sides = torch.stack(
                    [true_boxes[:, 2] - true_boxes[:, 0], true_boxes[:, 3] - true_boxes[:, 1]], 1
                )
                elongation = sides.amax(1) / sides.amin(1).clamp(min=1.0)
                reach = best["every location"].tolist()
                shapes[group] += list(zip(elongation.tolist(), reach, strict=True))
    result: dict[str, Any] = {
        "model": str(args.model),
        "device": describe_device("cpu"),
        "boxes": {group: len(next(iter(rows.values()))) for group, rows in found.items()},
        "proposed": {
            group: {name: sum(hits) / len(hits) for name, hits in rows.items()}
            for group, rows in found.items()
        },
        "every_location_by_type": {
            name: {
                side: {
                    "boxes": len(rows),
                    "median_elongation": statistics.median(e for e, _ in rows) if rows else None,
                    "median_best_iou": statistics.median(i for _, i in rows) if rows else None,
                }
                for side, rows in (
                    ("reached", [r for r in kept if r[1] >= 0.5]),
                    ("missed", [r for r in kept if r[1] < 0.5]),
                )
            }
            for name, kept in shapes.items()
        },
    }
    columns = list(groups)
    print("| boxes (IoU >= 0.5) | " + " | ".join(f"{g} ({result['boxes'][g]})" for g in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in found["novel"]:
        print(f"| {name} | " + " | ".join(f"{result['proposed'][g][name]:.1%}" for g in columns) + " |")
    print("\n| every location, per novel type | boxes | median long / short side | median best IoU |")
    print("|---|---|---|---|")
    for name, sides in result["every_location_by_type"].items():
        for side, row in sides.items():
            if row["boxes"]:
                print(
                    f"| {name}, {side} | {row['boxes']} | {row['median_elongation']:.1f} | {row['median_best_iou']:.2f} |"
                )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
