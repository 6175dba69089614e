#!/usr/bin/env python3
"""What the normality memory costs at inference: the detector's forward pass on one image with and
without ``model.normality`` (a full memory of MEMORY_SIZE unit vectors at the FPN level training uses),
interleaved rounds in one process so that load from other jobs hits both alike.

    .venv/bin/python benchmarks/normality_cost.py --arch small --size 200 --rounds 5 --passes 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig
from quickstudy.detect.normality import MEMORY_SIZE, NORMALITY_LEVEL, NormalityMemory


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, passes: int) -> dict[str, Any]:
    """Milliseconds per call of each variant, ``rounds`` rounds of ``passes`` calls taking turns, and each
    variant's overhead over the one before it (medians): list them as (baseline, variant) pairs."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for call in variants.values():  # warm-up
            call()
        for _ in range(rounds):
            for name, call in variants.items():
                started = time.perf_counter()
                for _ in range(passes):
                    call()
                times[name].append(1000 * (time.perf_counter() - started) / passes)
    median = {name: statistics.median(values) for name, values in times.items()}
    names = list(median)
    overhead = {names[i]: median[names[i]] / median[names[i - 1]] - 1 for i in range(1, len(names), 2)}
    return {"ms_per_image_median": median, "ms_per_image_rounds": times, "overhead": overhead}


def timing_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of a forward-pass timing: an untrained network's architecture and input side, the
    rounds and passes of :func:`interleaved`, and the CPU threads."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    parser.add_argument("--size", type=int, default=200, help="input side (px) of an untrained network")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=20, help="forward passes per round and variant")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def parse_timing(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed options, with the CPU threads set and torch seeded (0)."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def untrained(args: argparse.Namespace) -> DefectDetector:
    """An untrained ``--arch`` network of input side ``--size``, in eval mode."""
    return DefectDetector(["a", "b"], DetectorConfig(**ARCHITECTURES[args.arch], image_size=args.size)).eval()


def main() -> int:
    args = parse_timing(timing_parser(__doc__))
    model = untrained(args)
    vectors = F.normalize(torch.randn(MEMORY_SIZE, model.config.fpn_channels), dim=-1)
    # a threshold no location reaches: the cost of scoring, not of extra regions
    memory = NormalityMemory(vectors, 1e9, NORMALITY_LEVEL, model.backbone.strides[NORMALITY_LEVEL])
    image = torch.rand(1, 1, args.size, args.size)

    def run(normality: NormalityMemory | None) -> None:
        model.normality = normality
        model(image)

    report = {
        "command": " ".join(sys.argv),
        **interleaved({"without": lambda: run(None), "with": lambda: run(memory)}, args.rounds, args.passes),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
