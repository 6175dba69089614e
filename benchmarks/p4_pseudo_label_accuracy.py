#!/usr/bin/env python3
"""P4 diagnostic: how many of the TRAIN boxes that lost their class a trained model would
pseudo-label, and how many of those guesses are right (truth: the original NEU-DET labels).

Each valid TRAIN box is embedded unaugmented and classified against the model's learned class
vectors, as the training loss does; a box is pseudo-labelled where its top probability reaches the
threshold. The boxes are split into those that kept their class and those that lost it
(``drop_classes`` with the same seed and fraction as the P4 run that trained the model).

CPU:  .venv/bin/python benchmarks/p4_pseudo_label_accuracy.py --model /tmp/p4/s1/p0.5-box_only --seed 1 --fraction 0.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from p2_neu_detect import DATA, neu_store
from p4_missing_labels import drop_classes

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.model import detector_from_payload
from quickstudy.detect.training import box_embeddings
from quickstudy.detect.versions import ModelFolder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a P4 box_only model folder")
    parser.add_argument(
        "--seed", type=int, required=True, help="the P4 run's seed (which boxes lost their class)"
    )
    parser.add_argument("--fraction", type=float, required=True, help="the P4 run's p")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--thresholds", default="0.5,0.9,0.95,0.99")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = neu_store(Path(tempfile.mkdtemp(prefix="p4acc-")) / "neu.db", args.data)
    train = store.samples("train")
    _, dropped = drop_classes(train, args.fraction, args.seed)
    model = detector_from_payload(ModelFolder(args.model).load())
    data = DetectionSet.from_samples(train, model.classes, model.config.image_size)
    lost = torch.zeros_like(data.valid)  # per box slot, as DetectionSet lays them out
    for i, sample in enumerate(train):
        for j, box in enumerate(sample.boxes):
            lost[i, j] = box.box_id in dropped
    lost = lost[data.valid]
    truth = data.allowed[data.valid].float().argmax(-1)
    logits = model.recognize.logits(box_embeddings(model, data), model.class_vectors.detach())
    confidence, predicted = logits.softmax(-1).max(-1)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    for group, members in (("lost class", lost), ("kept class", ~lost)):
        for threshold in thresholds:
            taken = members & (confidence >= threshold)
            right = (predicted[taken] == truth[taken]).float().mean().item() if taken.any() else None
            rows.append(
                {
                    "boxes": group,
                    "threshold": threshold,
                    "taken": int(taken.sum()),
                    "of": int(members.sum()),
                    "accuracy": right,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        print(f"{r['boxes']} p >= {r['threshold']}: {r['taken']} / {r['of']} boxes, accuracy {accuracy}")


if __name__ == "__main__":
    main()
