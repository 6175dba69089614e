#!/usr/bin/env python3
"""How many of NEU-DET's novel TEST boxes could a P3 base model propose at all, and does its normality
memory find the ones its localizer misses?

P3 counts a novel TEST box as proposed when one of the detector's usual proposals overlaps it at IoU >= 0.5
(the issue's goal: 80% before learning). This script reads one base model's TEST images once and gives,
for the novel types' boxes and the base types', the share that each set of boxes overlaps at IoU >= 0.5:

- ``every location``: the box the localizer regresses at every location of every level, whatever its
  score (``DefectDetector.dense_boxes``): the ceiling of anything that re-ranks the localizer's boxes;
- ``top N``: the usual proposals at N per image (candidates above the score floor, then NMS);
- ``top 50 + regions``: with the normality memory's abnormal regions (connected cells at abnormality
  >= 1, boxed; ``DetectorConfig.normality_proposals``);
- ``top 50 + M abnormal``: with M more of the localizer's boxes, those at the most abnormal locations
  (each location read at its cell of the normality map), after NMS.

    .venv/bin/python benchmarks/proposal_ceiling.py MODEL [--data DIR] [--json-out FILE]

MODEL is a P3 base model folder (trained without the novel types, with a normality memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from p2_neu_detect import DATA, neu_store
from torchvision.ops import box_iou

from quickstudy.detect.data import letterbox, read_for_model
from quickstudy.detect.model import DefectDetector, DetectorConfig, first_kept
from quickstudy.detect.predictor import Predictor
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL
from quickstudy.train import describe_device

COUNTS = (50, 100, 200)
ABNORMAL_EXTRA = (20, 50)


def top_boxes(
    cfg: DetectorConfig, boxes: torch.Tensor, ranking: torch.Tensor, count: int, floor: torch.Tensor | None
) -> torch.Tensor:
    """The first ``count`` of ``boxes [P, 4]`` by ``ranking`` after NMS, as ``propose`` keeps them from its
    candidates (``floor``: a bool mask of the locations allowed)."""
    order = ranking.argsort(descending=True)
    if floor is not None:
        order = order[floor[order]]
    order = order[: cfg.candidates]
    return boxes[order][first_kept(boxes[order], ranking[order], cfg.proposal_nms, count)]


@torch.no_grad()
def box_sets(model: DefectDetector, path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The sets of boxes the module's docstring lists for one image (model input pixels), and its scale."""
    cfg, normality = model.config, model.normality
    assert normality is not None, "the base model has no normality memory"
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
    floor = scores > cfg.score_thresh
    sets = {"every location": boxes}
    for count in COUNTS:
        sets[f"top {count}"] = top_boxes(cfg, boxes, scores, count, floor)
    usual = (
        sets[f"top {cfg.proposals}"]
        if cfg.proposals in COUNTS
        else top_boxes(cfg, boxes, scores, cfg.proposals, floor)
    )
    regions, _ = normality.regions(abnormal, size)
    sets[f"top {cfg.proposals} + regions"] = torch.cat([usual, regions])
    for extra in ABNORMAL_EXTRA:
        # ties of abnormality (one cell holds several locations) broken by the localizer's score
        ranking = at_location + 1e-3 * scores
        sets[f"top {cfg.proposals} + {extra} abnormal"] = torch.cat(
            [usual, top_boxes(cfg, boxes, ranking, extra, None)]
        )
    return sets, scale


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a P3 base model folder")
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--work", type=Path, help="folder for the label store (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="proposal-ceiling-"))
    test = neu_store(work / "neu.db", args.data).samples("test")
    model = Predictor.from_dir(args.model).model
    found: dict[str, dict[str, list[bool]]] = {"novel": {}, "base": {}}
    for sample in test:
        sets, scale = box_sets(model, sample.path)
        for group, types in (("novel", set(NEU_NOVEL)), ("base", set(NEU_BASE))):
            truth = [b.xyxy for b in sample.boxes if b.allowed & types]
            if not truth:
                continue
            true_boxes = torch.tensor(truth, dtype=torch.float32) * scale
            for name, boxes in sets.items():
                overlap = box_iou(true_boxes, boxes).amax(1) if len(boxes) else torch.zeros(len(truth))
                found[group].setdefault(name, []).extend((overlap >= 0.5).tolist())
    result: dict[str, Any] = {
        "model": str(args.model),
        "device": describe_device("cpu"),
        "boxes": {group: len(next(iter(rows.values()))) for group, rows in found.items()},
        "proposed": {
            group: {name: sum(hits) / len(hits) for name, hits in rows.items()}
            for group, rows in found.items()
        },
    }
    print(
        f"| boxes (IoU >= 0.5) | novel TEST boxes ({result['boxes']['novel']}) | base TEST boxes ({result['boxes']['base']}) |"
    )
    print("|---|---|---|")
    for name in found["novel"]:
        print(
            f"| {name} | {result['proposed']['novel'][name]:.1%} | {result['proposed']['base'][name]:.1%} |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
