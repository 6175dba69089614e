"""Label store speed on NEU-DET: import of all 1800 images / 4189 boxes, and `quickstudy data stats`.

    python benchmarks/labels_import.py --data-root ../shared/data [--repeats 3] [--json-out FILE]

Goals (issue 2): import under 5 s, `data stats` (the whole command, Python start included) under 1 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quickstudy.data.paths import data_root
from quickstudy.labels import Store
from quickstudy.labels.known import import_neu_det


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", help="folder holding neu-det/ (default: $QUICKSTUDY_DATA, else ./data)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    root = data_root(args.data_root) / "neu-det"
    imports, stats_calls, samples_calls = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            path = Path(tmp) / f"neu{repeat}.qs"
            started = time.perf_counter()
            with Store.open(path) as store:
                report = import_neu_det(store, root)
            imports.append(time.perf_counter() - started)
            started = time.perf_counter()
            with Store.open(path) as store:
                store.samples("train")
            samples_calls.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "quickstudy", "data", "stats", "--store", str(path), "--json"],
                check=True,
                capture_output=True,
            )
            stats_calls.append(time.perf_counter() - started)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "images": report.images,
        "boxes": report.boxes,
        "import_seconds_median": round(statistics.median(imports), 3),
        "samples_train_seconds_median": round(statistics.median(samples_calls), 3),
        "data_stats_command_seconds_median": round(statistics.median(stats_calls), 3),
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
