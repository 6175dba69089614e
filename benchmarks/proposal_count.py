#!/usr/bin/env python3
"""How many proposals a detector should keep per image: the share of NEU-DET TEST boxes (all, the
novel types', the base types') that some proposal overlaps at IoU >= 0.5, and the seconds per image
of the proposal pass (backbone, localizer, NMS and the box embeddings), for each count. The counts
run in interleaved rounds in one process, so that load from other jobs hits them alike.

    .venv/bin/python benchmarks/proposal_count.py MODEL --counts 50,100 --rounds 3 \\
        --json-out benchmarks/results/cpu-2026-12-06/proposal-count.json

MODEL is a model folder (for P3: the base model, trained without the novel types).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from p2_neu_detect import DATA, neu_store

from quickstudy.detect.evaluation import proposal_recall
from quickstudy.detect.predictor import Predictor
from quickstudy.labels.known import NEU_NOVEL
from quickstudy.train import describe_device


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a model folder")
    parser.add_argument("--counts", default="50,100", help="proposals per image to compare")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over TEST per count")
    parser.add_argument("--data", type=Path, default=DATA, help="NEU-DET root (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--work", type=Path, help="folder for the label store (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="proposal-count-"))
    test = neu_store(work / "neu.db", args.data).samples("test")
    paths = [s.path for s in test]
    predictor = Predictor.from_dir(args.model)
    counts = [int(v) for v in args.counts.split(",")]
    novel = set(NEU_NOVEL)
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    recall: dict[int, dict[str, float]] = {}
    for _ in range(args.rounds):
        for n in counts:
            predictor.model.config.proposals = n
            started = time.perf_counter()
            proposals = predictor.proposals(paths)
            seconds[n].append((time.perf_counter() - started) / len(paths))
            if n in recall:  # the same proposals each round: only the time differs
                continue
            recall[n] = {
                kind: proposal_recall([[b.xyxy for b in s.boxes if pick(b)] for s in test], proposals)
                for kind, pick in {
                    "all": lambda b: True,
                    "novel": lambda b: bool(b.allowed & novel),
                    "base": lambda b: not b.allowed & novel,
                }.items()
            }
    first = counts[0]
    report = {
        "command": " ".join(sys.argv),
        "device": describe_device("cpu"),
        "threads": args.threads,
        "test_images": len(paths),
        "proposed_at_iou_0.5": recall,
        "seconds_per_image_median": {n: statistics.median(v) for n, v in seconds.items()},
        "seconds_per_image_rounds": seconds,
        f"time_ratio_to_{first}": {
            n: statistics.median(v) / statistics.median(seconds[first]) for n, v in seconds.items()
        },
    }
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
