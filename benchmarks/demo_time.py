"""How long `quickstudy demo` takes, end to end, as a user runs it (a fresh process, a fresh --out).

    .venv/bin/python benchmarks/demo_time.py [--runs 1] [-- extra demo arguments]

Prints a markdown section for benchmarks/results/demo.md: the command, the machine, the load on it
while the demo ran (the CPU is shared, so the load belongs next to any wall-clock number), the
total time, and the numbers the demo printed at each step.
"""

from __future__ import annotations

import argparse
import os
import platform
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
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
            return done.returncode
        rows.append((run, seconds, load_before, load_after, done.stdout))
    shown = " ".join(["quickstudy", "demo", *args.demo_args])
    print(f"## `{shown}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"- command: `.venv/bin/python benchmarks/demo_time.py {' '.join(sys.argv[1:])}`")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU used")
    print("\n| run | wall s | load avg (1 min) before → after |\n|---|---|---|")
    for run, seconds, before, after, _ in rows:
        print(f"| {run} | {seconds:.0f} | {before:.1f} → {after:.1f} |")
    print("\nWhat the last run printed, step by step (progress bars removed):\n\n```")
    for line in rows[-1][4].splitlines():
        if line.strip() and "━" not in line:
            print(line.rstrip())
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
