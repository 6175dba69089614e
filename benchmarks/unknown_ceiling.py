#!/usr/bin/env python3
"""How many of NEU-DET's novel TEST boxes could a P3 base model report `unknown` before learning, and
would ranking its `unknown` detections by abnormality instead of defect score report more?

P3 counts a novel TEST box as reported `unknown` when an `unknown` detection at the operating threshold
overlaps it at IoU >= 0.5 (the issue's goal: 50%, with at most 5% of known-type boxes called `unknown`).
This script reads one base model's raw outputs on the TEST images once and gives, for the novel boxes:

- where each one stops: not proposed (no output row at IoU >= 0.5), proposed but every such row near a
  prototype or on a normal region (the open-set test, ``ClassMemory.is_unknown``, says no), `unknown` at
  some score, `unknown` at the model's operating threshold (``ClassMemory.unknown_score``);
- for a few scores of an `unknown` row (its defect score, the product's; with its abnormality a:
  sqrt(defect · a / (1 + a)); a alone): the share of novel boxes and of base boxes reported `unknown`
  when the threshold is set on these TEST images so that at most B `unknown` detections per image lie on
  clean surface (B = 0.1, the budget `train` calibrates to, and 1). Thresholds set on TEST are an
  oracle's: the shares are a ceiling of what the score could give, not a result.

    .venv/bin/python benchmarks/unknown_ceiling.py MODEL [--data DIR] [--proposals-per-level N] [--json-out FILE]

MODEL is a P3 base model folder (trained without the novel types, with a normality memory).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
from proposal_ceiling import base_model_and_test, base_model_parser, boxes_of
from torchvision.ops import box_iou, nms

from quickstudy.cli._common import non_negative
from quickstudy.detect.memory import just_above
from quickstudy.evaluate.matching import on_clean_background
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL
from quickstudy.train import describe_device

BUDGETS = (0.1, 1.0)
SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "defect score": lambda defect, abnormality: defect,
    "sqrt(defect * a / (1 + a))": lambda defect, abnormality: (
        defect * abnormality / (1 + abnormality)
    ).sqrt(),
    "abnormality a": lambda defect, abnormality: abnormality,
}


def main() -> int:
    parser = base_model_parser(__doc__)
    parser.add_argument(
        "--proposals-per-level", type=non_negative, help="override the model's (an inference setting)"
    )
    args = parser.parse_args()
    predictor, test = base_model_and_test(args)
    if args.proposals_per_level is not None:
        predictor.model.config.proposals_per_level = args.proposals_per_level
    memory = predictor.model.memory
    outputs = predictor.raw([s.path for s in test])
    stops = dict.fromkeys(
        (
            "not proposed",
            "proposed, not unknown",
            "unknown below the operating score",
            "unknown at the operating score",
        ),
        0,
    )
    # per image and score: the unknown rows' scores after NMS, which lie on clean surface, and which
    # novel / base boxes each overlaps at IoU >= 0.5
    rows: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]] = {
        n: [] for n in SCORES
    }
    for sample, out in zip(test, outputs, strict=True):
        novel, base = boxes_of(sample, set(NEU_NOVEL)), boxes_of(sample, set(NEU_BASE))
        unknown = memory.is_unknown(out)
        hits = box_iou(novel, out["boxes"]) >= 0.5
        for hit in hits:
            if not hit.any():
                stops["not proposed"] += 1
            elif not (hit & unknown).any():
                stops["proposed, not unknown"] += 1
            elif not (hit & unknown & (out["defect_scores"] >= memory.unknown_score)).any():
                stops["unknown below the operating score"] += 1
            else:
                stops["unknown at the operating score"] += 1
        found = out["boxes"][unknown]
        for name, score in SCORES.items():
            values = score(out["defect_scores"][unknown], out["abnormality"][unknown])
            keep = nms(found, values, 0.5)
            kept = found[keep]
            clean = on_clean_background(kept, torch.cat([novel, base]))
            rows[name].append((values[keep], clean, box_iou(novel, kept) >= 0.5, box_iou(base, kept) >= 0.5))
    n_novel = sum(stops.values())
    n_base = sum(r[3].shape[0] for r in rows["defect score"])
    ceiling: dict[str, dict[str, dict[str, float]]] = {}
    for name, per_image in rows.items():
        clean_scores = (
            torch.cat([values[clean] for values, clean, _, _ in per_image]).sort(descending=True).values
        )
        ceiling[name] = {}
        for budget in BUDGETS:
            allowed = int(budget * len(test))
            # the lowest threshold that leaves at most `allowed` clean-surface alarms, as train's
            cut = just_above(float(clean_scores[allowed])) if len(clean_scores) > allowed else -1.0
            reported = [values >= cut for values, _, _, _ in per_image]
            ceiling[name][str(budget)] = {
                "novel_unknown": sum(
                    int((n & r).any(1).sum()) for (_, _, n, _), r in zip(per_image, reported, strict=True)
                )
                / n_novel,
                "base_unknown": sum(
                    int((b & r).any(1).sum()) for (_, _, _, b), r in zip(per_image, reported, strict=True)
                )
                / n_base,
                "threshold": cut,
            }
    at_operating = sum(
        int((values[clean] >= memory.unknown_score).sum()) for values, clean, _, _ in rows["defect score"]
    )
    result = {
        "model": str(args.model),
        "device": describe_device("cpu"),
        "test_images": len(test),
        "novel_boxes": n_novel,
        "base_boxes": n_base,
        "proposals_per_level": predictor.model.config.proposals_per_level,
        "unknown_score": memory.unknown_score,
        "clean_alarms_per_image_at_operating": at_operating / len(test),
        "novel_stops": {k: v / n_novel for k, v in stops.items()},
        "oracle_budget": ceiling,
    }
    print(
        f"{n_novel} novel TEST boxes, {n_base} base, {len(test)} images; operating unknown score "
        f"{memory.unknown_score:.3f}, at which {at_operating / len(test):.2f} unknown detections per image "
        "lie on clean surface"
    )
    print("\n| novel boxes stop at | share |\n|---|---|")
    for key, share in result["novel_stops"].items():
        print(f"| {key} | {share:.1%} |")
    print(
        "\n| unknown ranked by | "
        + " | ".join(f"novel / base unknown at {b} clean alarms per image" for b in BUDGETS)
        + " |"
    )
    print("|---" * (len(BUDGETS) + 1) + "|")
    for name, by_budget in ceiling.items():
        cells = [f"{row['novel_unknown']:.1%} / {row['base_unknown']:.1%}" for row in by_budget.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
