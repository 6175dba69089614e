#!/usr/bin/env python3
"""What the learned types' localization head costs at inference: one image through the detector as
it is, against the same detector with a learned head (a copy of the base head, owning one class, as
``learn`` leaves it), in torch (``model(image)``) and through their ONNX exports
(``OnnxPredictor.raw``, where the two heads' first convolutions on each map are merged into one);
interleaved rounds in one process so that load from other jobs hits both alike.

    .venv/bin/python benchmarks/second_localizer_cost.py --model DIR --image FILE --rounds 5 --passes 20
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from normality_cost import interleaved, parse_timing, timing_parser, untrained
from PIL import Image

from quickstudy.deploy.export import export_onnx
from quickstudy.deploy.runtime import OnnxPredictor
from quickstudy.detect.model import DefectDetector, detector_payload
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.versions import ModelFolder


def exported(model: DefectDetector, root: Path, threads: int) -> OnnxPredictor:
    ModelFolder(root / "model").save(detector_payload(model))
    return OnnxPredictor(export_onnx(root / "model", root / "export"), threads=threads)


def main() -> int:
    parser = timing_parser(__doc__)
    parser.add_argument("--model", type=Path, help="a trained model folder (default: an untrained --arch)")
    parser.add_argument("--image", type=Path, help="the image it sees (default: noise)")
    args = parse_timing(parser)
    one = Predictor.from_dir(args.model).model if args.model else untrained(args)
    one.set_learned_classes([])  # the base head alone, whatever the folder's version learned
    two = copy.deepcopy(one)
    two.add_learned_localize()
    two.set_learned_classes(two.classes[-1:])
    size, channels = one.config.image_size, one.config.channels
    if args.image:
        pixels = np.asarray(
            Image.open(args.image).convert("L" if channels == 1 else "RGB").resize((size, size))
        )
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    image = (
        torch.from_numpy(pixels.astype(np.float32) / 255).reshape(size, size, channels).permute(2, 0, 1)[None]
    )
    with tempfile.TemporaryDirectory() as work:
        onnx_one = exported(one, Path(work) / "one", args.threads)
        onnx_two = exported(two, Path(work) / "two", args.threads)
        variants = {
            "torch, one head": lambda: one(image),
            "torch, two heads": lambda: two(image),
            "onnx, one head": lambda: onnx_one.raw([pixels]),
            "onnx, two heads": lambda: onnx_two.raw([pixels]),
        }
        report = {"command": " ".join(sys.argv), **interleaved(variants, args.rounds, args.passes)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
