"""How long `quickstudy demo` takes, end to end, as a user runs it (a fresh process, a fresh --out).

    .venv/bin/python benchmarks/demo_time.py [--runs 1] [--diagnose] [-- extra demo arguments]

Prints a markdown section for benchmarks/results/demo.md: the command, the machine, the load on it
while the demo ran (the CPU is shared, so the load belongs next to any wall-clock number), the
total time, the CPU seconds the demo used (less dependent on the neighbours than wall time), and
the numbers the demo printed at each step. ``--diagnose`` (built-in line only) also scores step 2's
model on the known types' test images class-agnostically: where ``AP50_agnostic`` is far above
mAP50 the boxes are found and misnamed, where it is low they are not found.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

QUICKSTUDY = Path(sys.executable).with_name("quickstudy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--keep", type=Path, help="run the demo in this folder and keep it (default: a temporary one)"
    )
    parser.add_argument(
        "--diagnose", action="store_true", help="score step 2's model class-agnostically (built-in line)"
    )
    parser.add_argument("demo_args", nargs="*", help="passed to `quickstudy demo` (after --)")
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            out = args.keep or Path(folder) / "demo"
            command = [str(QUICKSTUDY), "demo", "--out", str(out), *args.demo_args]
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            done = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"}
            )
            seconds = time.perf_counter() - started
            load_after = os.getloadavg()[0]
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = usage.ru_utime + usage.ru_stime - sum(row[2] for row in rows)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
                return done.returncode
            diagnosis = step_two_scores(out) if args.diagnose else None
        rows.append((run, seconds, cpu, load_before, load_after, done.stdout, diagnosis))
    shown = " ".join(["quickstudy", "demo", *args.demo_args])
    print(f"## `{shown}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"- command: `.venv/bin/python benchmarks/demo_time.py {' '.join(sys.argv[1:])}`")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU used")
    print("\n| run | wall s | CPU s | load avg (1 min) before → after |\n|---|---|---|---|")
    for run, seconds, cpu, before, after, _, _ in rows:
        print(f"| {run} | {seconds:.0f} | {cpu:.0f} | {before:.1f} → {after:.1f} |")
    for run, *_, diagnosis in rows:
        if diagnosis is not None:
            print(f"\nStep 2's model, run {run}: {json.dumps(diagnosis)}")
    print("\nWhat the last run printed, step by step (progress bars removed):\n\n```")
    for line in rows[-1][5].splitlines():
        if line.strip() and "━" not in line:
            print(line.rstrip())
    print("```")
    return 0


def step_two_scores(out: Path) -> dict[str, object]:
    """mAP50, per-class and class-agnostic AP50 and AR@100 (IoU 0.5) of the model step 2 trained
    (version 1), on the test images holding only the known types, with the split type's boxes
    under the merged name they had then."""
    from dataclasses import replace

    from quickstudy.demo import LINE_NEW, LINE_SPLIT
    from quickstudy.detect.evaluation import evaluate_detector
    from quickstudy.detect.predictor import Predictor
    from quickstudy.labels.store import Store

    coarse = "line"  # the merged name of LINE_SPLIT in the built-in line's story
    known_test = []
    with Store.open(out / "labels.qs", create=False) as store:
        for sample in store.samples("test"):
            if any(box.allowed & set(LINE_NEW) for box in sample.boxes):
                continue
            boxes = [
                replace(box, allowed=frozenset({coarse})) if box.allowed <= set(LINE_SPLIT) else box
                for box in sample.boxes
            ]
            known_test.append(replace(sample, boxes=boxes))
    metrics = evaluate_detector(Predictor.from_dir(out / "model", version=1), known_test)
    return {
        "test images": len(known_test),
        "mAP50": round(metrics["mAP50"], 3),
        "AP50": {name: round(value, 3) for name, value in metrics["AP50"].items()},
        "AP50_agnostic": round(metrics["AP50_agnostic"], 3),
        "AR100_agnostic_50": round(metrics["AR100_agnostic_50"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
