#!/usr/bin/env python3
"""Set again the score an ``unknown`` detection needs on a model ``retire_meaning.py`` trained, with
today's rule (``detect.training.unknown_operating``), and save it as a new version beside the old one.

The network, the prototypes and every other threshold stay as they are, so rerunning ``retire_meaning.py``
on the copy (it reuses the model folder it finds) scores this one change. The held-out images are what
training calibrated on: the TRAIN images it held out (``split_validation``) or, with ``--fit-all``, the
fitted TRAIN images themselves.

    .venv/bin/python benchmarks/recalibrate_unknown.py /tmp/qs_retire_run0 /tmp/recal0
    cd benchmarks && ../.venv/bin/python retire_meaning.py --meaning unnamed --arch tiny --epochs 12 --fit-all \\
        --threads 1 --seed 0 --work /tmp/recal0 --json-out recal0.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.model import detector_from_payload, detector_payload
from quickstudy.detect.training import (
    clean_surface_unknowns,
    detect,
    select_samples,
    split_validation,
    unknown_operating,
)
from quickstudy.detect.versions import ModelFolder
from quickstudy.labels.store import Store


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path, help="a retire_meaning.py --work folder with --meaning unnamed")
    parser.add_argument("copy", type=Path, help="where to copy it before changing the model (replaced)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shutil.rmtree(args.copy, ignore_errors=True)
    shutil.copytree(args.work, args.copy)
    store = Store.open(args.copy / "retired-unnamed.db", create=False)
    folder = ModelFolder(args.copy / "model-unnamed")
    payload = folder.load()
    model = detector_from_payload(payload, "cpu").eval()
    train = payload.get("train") or {}
    samples = select_samples([s for s in store.samples("train") if s.checked], None, train.get("limit"))
    samples = split_validation(samples)[1] if train.get("hold_out", True) else samples
    held = DetectionSet.from_samples(samples, model.classes, model.config.image_size, model.config.channels)
    outputs = detect(model, held.images)
    truth = [boxes[valid] for boxes, valid in zip(held.boxes, held.valid, strict=True)]
    before = model.memory.unknown_score
    chosen = unknown_operating(model.memory, outputs, (held.unnamed & held.valid).any(1), truth)
    model.memory = model.memory.with_thresholds(unknown_operating=chosen)
    after = model.memory.unknown_score
    # at any score; each threshold cuts them
    alarms = clean_surface_unknowns([model.memory.unknown_detections(out) for out in outputs], truth)
    print(f"on {len(outputs)} held-out images, clean-surface unknown detections per image:")
    for name, score in (("before", before), ("after", after)):
        print(
            f"  {name}: unknown score {score:.4f}, {int((alarms >= score).sum()) / len(outputs):.3f} per image"
        )
    folder.save(
        detector_payload(
            model,
            note="the unknown score set again (benchmarks/recalibrate_unknown.py)",
            parent=payload.get("version"),
            train=payload.get("train"),
            taxonomy_version=payload.get("taxonomy_version"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
