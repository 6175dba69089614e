"""`quickstudy demo`'s summary.json over several seeds, for one or more settings side by side.

One seed of the demo moves by ±0.1 or more on most of its numbers (benchmarks/results/unknowns.md), so a
setting is judged here on the mean over seeds and on how many seeds it wins, never on one run.

    .venv/bin/python benchmarks/demo_seeds.py --out /tmp/demo-seeds --seeds 0,1,2,3,4 \\
        --setting default= --setting synthetic="--synthetic-defects 0.2" [--jobs 2] [--json-out FILE]

Each (setting, seed) runs as a user runs it: a fresh process, ``quickstudy demo --out OUT/SETTING-sSEED
--seed SEED`` plus the setting's arguments, one torch thread (the demo's default). A run whose folder
already holds a summary.json is read, not run again. Prints one markdown table per setting and, from the
second setting on, its mean change against the first and the seeds on which it is higher.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

QUICKSTUDY = Path(sys.executable).with_name("quickstudy")
KEYS = ("known_map50", "new_unknown_before", "new_named_after", "split_named_after", "false_alarms_per_image")


def read_summary(path: Path) -> dict[str, float]:
    """A demo's summary.json; SystemExit with one line naming the file when it is not one."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not a demo summary ({type(error).__name__}: {error})") from None
    if not isinstance(summary, dict):
        raise SystemExit(f"{path}: not a demo summary (a JSON {type(summary).__name__})")
    bad = [k for k in (*KEYS, "seconds") if not isinstance(summary.get(k), int | float)]
    if bad:
        raise SystemExit(f"{path}: not a demo summary (no number for {', '.join(bad)})")
    return summary


def run(out: Path, seed: int, extra: list[str]) -> dict[str, float]:
    summary = out / "summary.json"
    if not summary.exists():
        command = [str(QUICKSTUDY), "demo", "--out", str(out), "--seed", str(seed), *extra]
        log = out.parent / f"{out.name}.log"
        with log.open("w") as stream:
            if subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"{log}: `{shlex.join(command)}` failed (its output is in this file)")
    return read_summary(summary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="one demo folder per setting and seed")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--setting",
        action="append",
        required=True,
        metavar='NAME="ARGS"',
        help="a name and the demo arguments it adds (repeat; the first is the reference)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="demos run at once (each uses one thread)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = dict(s.split("=", 1) for s in args.setting)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for name in settings for seed in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = pool.map(
            lambda job: run(args.out / f"{job[0]}-s{job[1]}", job[1], shlex.split(settings[job[0]])), jobs
        )
        results = dict(zip(jobs, done, strict=True))
    reference = next(iter(settings))
    report: dict[str, dict] = {}
    for name, extra in settings.items():
        rows = {seed: results[name, seed] for seed in seeds}
        means = {key: mean(row[key] for row in rows.values()) for key in KEYS}
        print(f"\n### {name} (`quickstudy demo {extra}`)\n")
        print("| seed | " + " | ".join(KEYS) + " | seconds |")
        print("|---" * (len(KEYS) + 2) + "|")
        for seed, row in rows.items():
            print(f"| {seed} | " + " | ".join(f"{row[k]:.3f}" for k in KEYS) + f" | {row['seconds']:.0f} |")
        print("| mean | " + " | ".join(f"{means[k]:.3f}" for k in KEYS) + " | |")
        report[name] = {"arguments": extra, "seeds": rows, "mean": means}
        if name != reference:
            # fewer false alarms is better; every other number is better higher
            wins = {
                key: sum(
                    (row[key] < results[reference, seed][key])
                    if key == "false_alarms_per_image"
                    else (row[key] > results[reference, seed][key])
                    for seed, row in rows.items()
                )
                for key in KEYS
            }
            change = {key: means[key] - report[reference]["mean"][key] for key in KEYS}
            print(
                f"| change vs {reference} | "
                + " | ".join(f"{change[k]:+.3f} (better on {wins[k]}/{len(seeds)})" for k in KEYS)
                + " | |"
            )
            report[name].update(change=change, better_on=wins)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
