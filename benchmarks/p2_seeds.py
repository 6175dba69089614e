"""Mean ± standard deviation of P2 runs over seeds: one row per JSON written by
``p2_neu_detect.py --json-out``, then the mean and the sample standard deviation of each column.

    .venv/bin/python benchmarks/p2_seeds.py benchmarks/results/cpu-2026-11-28/p2-*-seed{0,1,2}-*.json
    .venv/bin/python benchmarks/p2_seeds.py RUN.json ... --variant "proposals=100,proposal_nms=0.7"

``--variant`` reads the scores of the same trained models under other inference settings
(``p2_neu_detect.py --inference-variants``); ``--json`` prints the table for machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

COLUMNS = ("mAP50", "mAP", "AP50_agnostic", "AR100_agnostic_50")


def row_of(path: Path, weighting: str | None, variant: str | None) -> tuple[str, dict[str, float]]:
    """(``seed N``, the columns of our model's eval report) from one P2 JSON; the report of the only
    weighting in it unless ``weighting`` names one, and of ``variant``'s inference settings if given."""
    try:
        run = json.loads(path.read_text())
        ours, seed = run["ours"], run["args"]["seed"]
        if weighting is None and len(ours) != 1:
            raise SystemExit(f"{path}: holds the weightings {sorted(ours)}; pick one with --weighting")
        report = ours[weighting] if weighting else next(iter(ours.values()))
        if variant:
            variants = report.get("inference_variants") or {}
            if variant not in variants:
                raise SystemExit(f"{path}: no inference variant {variant!r} (it has {sorted(variants)})")
            report = variants[variant]
        row = {c: report[c] for c in COLUMNS} | {f"AP50 {k}": v for k, v in report["AP50"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise SystemExit(f"{path}: not a p2_neu_detect.py JSON ({error!r})") from None
    return f"seed {seed}", row


def summary(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per column: (mean, sample standard deviation; 0 for a single run)."""
    stats = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        stats[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files of p2_neu_detect.py --json-out")
    parser.add_argument("--weighting", help="which of our runs, when a file holds several")
    parser.add_argument("--variant", help="an inference variant's scores instead of the defaults'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    seeds, rows = zip(*(row_of(path, args.weighting, args.variant) for path in args.runs), strict=True)
    stats = summary(list(rows))
    if args.json:
        print(json.dumps({"runs": dict(zip(map(str, args.runs), rows, strict=True)), "summary": stats}))
        return
    width = max(len(key) for key in stats)
    print(f"{'':{width}}  " + "  ".join(f"{seed:>8}" for seed in seeds) + "   mean ± std")
    for key, (mean, std) in stats.items():
        values = "  ".join(f"{row[key]:8.3f}" for row in rows)
        print(f"{key:{width}}  {values}   {mean:.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
