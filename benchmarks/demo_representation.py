#!/usr/bin/env python3
"""Can a demo model's box features tell the line's five types apart from 5 examples each?

For every box of the built-in line (``quickstudy demo``'s ``line/{train,test}`` VOC folders, with each
box's true type), the box's features are read from the base model (version 1 of the run's model
folder) four ways: the recognition head's unit embedding (what ``learn`` makes prototypes of), its
hidden layer, the RoI-pooled pyramid features the head reads (averaged over the pool), and the raw
pixels of the box (a floor: 12 x 12, standardised). Per type, 5 TRAIN boxes are averaged into a
prototype and every TEST box is given its nearest prototype; the table is each type's share of test
boxes named right, averaged over 5 draws of the 5 boxes (chance: 1 in 5). The base model was trained on
``line`` (scratch and inclusion), ``pit`` and ``stain``; crack, scratch and inclusion are what ``learn``
must tell apart later. ``--pretrained RUN`` swaps the base model's backbone for a ``quickstudy
pretrain --backbone detector`` run's.

Whether a representation could say ``unknown`` of the new type at all: each TEST box's distance (1 − cosine)
to its nearest TRAIN box of a known type, and per representation the AUROC of the new type's TEST boxes
against the known types' (0.5: no better than chance) and the share of them farther than 95% of the known
types' TEST boxes (what an ``unknown`` cut letting 5% of known boxes through would call unknown).

    .venv/bin/quickstudy demo --out /tmp/demo
    .venv/bin/python benchmarks/demo_representation.py /tmp/demo [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from quickstudy.demo import LINE_NEW
from quickstudy.detect.data import letterbox, read_for_model
from quickstudy.detect.model import DefectDetector
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.recognition import pyramid_roi_align
from quickstudy.labels.formats.voc import read_voc

SHOTS = 5
DRAWS = 5
PIXELS = 12


def line_boxes(run: Path, split: str) -> list[tuple[Path, tuple[float, ...], str]]:
    """(image, box, true type) of every box of the run's line images of ``split``."""
    return [
        (image.path, box.xyxy, str(box.label))
        for image in read_voc(run / "line" / split)
        for box in image.boxes
    ]


@torch.no_grad()
def representations(
    model: DefectDetector, boxes: list[tuple[Path, tuple[float, ...], str]]
) -> dict[str, torch.Tensor]:
    """Unit rows ``[N, *]`` per representation, in the order of ``boxes``."""
    from torchvision.ops import roi_align

    head = model.recognize
    rows: dict[str, list[torch.Tensor]] = {"embedding": [], "hidden": [], "pooled": [], "pixels": []}
    features: tuple[Path, torch.Tensor, list[torch.Tensor], float] | None = None  # the last image's
    for path, xyxy, _ in boxes:
        if features is None or features[0] != path:  # one forward pass per image, not per box
            image, scale = letterbox(read_for_model(path, model.config.channels)[0], model.config.image_size)
            x = image[None].float() / 255
            features = (path, x, model.features(x), scale)
        _, x, pyramid, scale = features
        roi = torch.tensor([[0.0, *(v * scale for v in xyxy)]])
        pooled = pyramid_roi_align(pyramid, roi, head.strides, head.pool_size, 2)
        hidden = head.mlp[:3](pooled)
        rows["embedding"].append(head.mlp[3](hidden))
        rows["hidden"].append(hidden)
        rows["pooled"].append(pooled.mean((2, 3)))
        pixels = roi_align(x, roi, PIXELS, 1.0, 2, aligned=True).flatten(1)
        rows["pixels"].append((pixels - pixels.mean()) / (pixels.std() + 1e-6))
    return {name: F.normalize(torch.cat(values), dim=-1) for name, values in rows.items()}


def nearest_prototype(
    train: torch.Tensor, train_types: list[str], test: torch.Tensor, test_types: list[str]
) -> dict[str, float]:
    """Per type, the share of test rows whose nearest 5-shot prototype is their own type's (mean of draws)."""
    types = sorted(set(train_types))
    right = dict.fromkeys(types, 0.0)
    for draw in range(DRAWS):
        rng = random.Random(draw)
        prototypes = []
        for name in types:
            rows = [i for i, t in enumerate(train_types) if t == name]
            prototypes.append(F.normalize(train[rng.sample(rows, min(SHOTS, len(rows)))].mean(0), dim=0))
        named = (test @ torch.stack(prototypes).T).argmax(1)
        for k, name in enumerate(types):
            mine = torch.tensor([t == name for t in test_types])
            right[name] += float((named[mine] == k).float().mean()) / DRAWS if mine.any() else 0.0
    return right


def open_set(
    train: torch.Tensor, train_types: list[str], test: torch.Tensor, test_types: list[str], new: set[str]
) -> dict[str, float]:
    """AUROC of the ``new`` types' test rows against the known ones by distance to the nearest known
    train row, and the share of new rows beyond the known rows' 95% quantile."""
    known_train = torch.tensor([t not in new for t in train_types])
    distance = 1 - (test @ train[known_train].T).amax(1)
    is_new = torch.tensor([t in new for t in test_types])
    known, novel = distance[~is_new], distance[is_new]
    greater = (novel[:, None] > known[None]).float() + 0.5 * (novel[:, None] == known[None]).float()
    return {
        "auroc": float(greater.mean()),
        "beyond_known_q95": float((novel > torch.quantile(known, 0.95)).float().mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a finished `quickstudy demo --out` folder (built-in line)")
    parser.add_argument("--version", type=int, default=1, help="model version (1: the base model)")
    parser.add_argument("--pretrained", type=Path, help="a `quickstudy pretrain --backbone detector` run")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Predictor.from_dir(args.run / "model", version=args.version).model.eval()
    if args.pretrained is not None:
        from quickstudy.pretrain.run import load_pretrained

        model.backbone.load_state_dict(load_pretrained(args.pretrained).backbone.state_dict())
    train, test = line_boxes(args.run, "train"), line_boxes(args.run, "test")
    train_rows, test_rows = representations(model, train), representations(model, test)
    result: dict[str, Any] = {
        "run": str(args.run),
        "version": args.version,
        "pretrained": str(args.pretrained) if args.pretrained else None,
        "shots": SHOTS,
        "draws": DRAWS,
        "named_right": {
            name: nearest_prototype(
                train_rows[name], [t for *_, t in train], test_rows[name], [t for *_, t in test]
            )
            for name in train_rows
        },
    }
    result["open_set"] = {
        name: open_set(
            train_rows[name], [t for *_, t in train], test_rows[name], [t for *_, t in test], set(LINE_NEW)
        )
        for name in train_rows
    }
    types = sorted(next(iter(result["named_right"].values())))
    print("| features | " + " | ".join(types) + " |")
    print("|---" * (len(types) + 1) + "|")
    for name, shares in result["named_right"].items():
        print(f"| {name} | " + " | ".join(f"{shares[t]:.2f}" for t in types) + " |")
    print(f"\n| features | {'/'.join(LINE_NEW)} vs known: AUROC | beyond the known boxes' 95% |")
    print("|---|---|---|")
    for name, row in result["open_set"].items():
        print(f"| {name} | {row['auroc']:.2f} | {row['beyond_known_q95']:.2f} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
