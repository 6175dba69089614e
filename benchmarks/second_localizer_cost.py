#!/usr/bin/env python3
"""What a second localization head would cost at inference: the detector's forward pass on one image
as it is, against the same pass with a copy of the localization head run beside it on the same
features (its own proposals, embedded and classified), interleaved rounds in one process so that load
from other jobs hits both alike. The design this sizes keeps the base head for the known types and a
copy, adapted by ``learn``, for the learned ones (``p3_neu_fewshot_detect.py --two-localizers``).

    .venv/bin/python benchmarks/second_localizer_cost.py --model DIR --image FILE --rounds 5 --passes 20
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from normality_cost import interleaved, parse_timing, timing_parser, untrained
from PIL import Image

from quickstudy.detect.predictor import Predictor


def main() -> int:
    parser = timing_parser(__doc__)
    parser.add_argument("--model", type=Path, help="a trained model folder (default: an untrained --arch)")
    parser.add_argument("--image", type=Path, help="the image it sees (default: noise)")
    args = parse_timing(parser)
    model = Predictor.from_dir(args.model).model if args.model else untrained(args)
    second = copy.deepcopy(model.localize)
    size, channels = model.config.image_size, model.config.channels
    if args.image:
        pixels = Image.open(args.image).convert("L" if channels == 1 else "RGB").resize((size, size))
        image = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255).reshape(size, size, channels)
        image = image.permute(2, 0, 1)[None]
    else:
        image = torch.rand(1, channels, size, size)

    def two_heads() -> None:
        features = model.features(image)
        for head in (model.localize, second):
            model.classify(model.propose(features, head(features), image.shape[-2:]))

    variants = {"one head": lambda: model(image), "two heads": two_heads}
    report = {"command": " ".join(sys.argv), **interleaved(variants, args.rounds, args.passes)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
