#!/usr/bin/env python3
"""Where a trained detector's class-agnostic false positives come from, on the TEST images.

Detections of all classes are merged as in the class-agnostic AP (``merge_classes``), ranked
by score over the whole split and matched greedily to ground truth at IoU 0.5 (as COCO does). Every
unmatched detection ranked above the point where recall reaches ``--recall`` is sorted into one
kind: ``duplicate`` (IoU ≥ 0.5 with a box already found), ``part_of_box`` (> 70% of it inside one
ground-truth box), ``spans_boxes`` (holds > 70% of two or more boxes), ``loose`` (IoU 0.1–0.5 with
a box) or ``background`` (IoU < 0.1 with every box); scored for one class (P3's new types), also
``other_type`` (IoU ≥ 0.1 with a box of another class only). Many part/loose errors mean the boxes are
found but drawn or ranked badly; many background errors mean the localizer fires on clean surface.

    .venv/bin/python benchmarks/p2_error_kinds.py --model /tmp/p2/ours-uncertainty --store /tmp/p2/neu.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.ops import box_iou

from quickstudy.detect.predictor import Predictor
from quickstudy.evaluate.detection import merge_classes
from quickstudy.labels.store import Store

KINDS = ("duplicate", "part_of_box", "spans_boxes", "loose", "other_type", "background")


def error_kinds(predictor: Predictor, samples: list, recall: float) -> dict[str, object]:
    """The class-agnostic error kinds of ``predictor`` on ``samples`` (:func:`ranked_error_kinds`)."""
    outputs = [merge_classes(out) for out in predictor.raw([s.path for s in samples])]
    truth = [[b.xyxy for b in s.boxes] for s in samples]
    return ranked_error_kinds(outputs, truth, recall)


def ranked_error_kinds(
    outputs: list[dict], truth: list[list], recall: float, others: list[list] | None = None
) -> dict[str, object]:
    """Detections (per image ``boxes`` and ``scores``) ranked over all images, matched greedily to
    ``truth`` (per image xyxy boxes) at IoU 0.5, and each unmatched one ranked above ``recall`` sorted
    into its kind. ``others`` (per image, boxes of other classes, for one class's detections): a
    detection that misses ``truth`` but overlaps one of them at IoU >= 0.1 is ``other_type``."""
    gts = [torch.tensor(t, dtype=torch.float32).reshape(-1, 4) for t in truth]
    rest = [torch.tensor(t, dtype=torch.float32).reshape(-1, 4) for t in (others or [[] for _ in truth])]
    ranked = []  # (score, image index, box)
    for i, out in enumerate(outputs):
        ranked += [
            (float(s), i, torch.as_tensor(b, dtype=torch.float32))
            for b, s in zip(out["boxes"], out["scores"], strict=True)
        ]
    ranked.sort(key=lambda r: -r[0])
    found = [torch.zeros(len(t), dtype=torch.bool) for t in gts]
    total = sum(len(t) for t in gts)
    counts = dict.fromkeys(KINDS, 0)
    hits = 0
    for _, i, box in ranked:
        if hits >= recall * total:
            break
        gt = gts[i]
        if not len(gt):
            counts[off_truth(box, rest[i])] += 1
            continue
        iou = box_iou(box[None], gt)[0]
        best = int(iou.argmax())
        if iou[best] >= 0.5 and not found[i][best]:
            found[i][best] = True
            hits += 1
            continue
        inter = (torch.minimum(box[2:], gt[:, 2:]) - torch.maximum(box[:2], gt[:, :2])).clamp(min=0).prod(-1)
        if iou[best] >= 0.5:
            counts["duplicate"] += 1
        elif (inter / (box[2:] - box[:2]).prod().clamp(min=1e-6)).max() > 0.7:
            counts["part_of_box"] += 1
        elif ((inter / (gt[:, 2:] - gt[:, :2]).prod(-1)) > 0.7).sum() >= 2:
            counts["spans_boxes"] += 1
        elif iou.max() >= 0.1:
            counts["loose"] += 1
        else:
            counts[off_truth(box, rest[i])] += 1
    return {"ground_truth": total, "found": hits, "recall_reached": hits / max(1, total), "errors": counts}


def off_truth(box: torch.Tensor, others: torch.Tensor) -> str:
    """The kind of a detection that overlaps no true box of its own: ``other_type`` where it overlaps one
    of ``others`` at IoU >= 0.1, else ``background``."""
    return "other_type" if len(others) and box_iou(box[None], others).max() >= 0.1 else "background"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder")
    parser.add_argument("--store", type=Path, required=True, help="the label store it was trained from")
    parser.add_argument("--recall", type=float, default=0.5, help="count the errors ranked above this recall")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = error_kinds(Predictor.from_dir(args.model), Store.open(args.store).samples("test"), args.recall)
    result["model"] = str(args.model)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
