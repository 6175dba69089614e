#!/usr/bin/env python3
"""Where tiling starts to beat letterboxing: the measurement behind ``detect.training.TILE_BELOW``.

For each target size ``s`` (px) the synthetic line (``SyntheticLine(size=D, frame=(L, L))``, defects drawn
as on a D-px image) is written with square frames of side ``L`` chosen so that the median training box
side (sqrt(w*h)), letterboxed with its frame to the input size, is about ``s`` — the quantity
``needs_tiling`` compares with TILE_BELOW; the input size is fixed, so a smaller ``s`` means a larger
frame around defects of the same pixel size. On each store the ``tiny`` detector trains twice with the
same options, ``--tiling on`` and ``--tiling off``, through ``train_detector`` with the keywords
`quickstudy train` gives (``cli.detect.training_keywords``), and both are scored on the store's TEST
frames by ``quickstudy.evaluate`` (what `quickstudy eval` prints). Every number is reachable as

    quickstudy train --store WORK/s<S>-seed<K>/store.qs --out M --arch tiny --image-size 128 \
        --tiling on|off --epochs E --seed K ...
    quickstudy eval --model M --store WORK/s<S>-seed<K>/store.qs --split test --json

(the exact commands are in the JSON). The smallest ``s`` at which letterboxing is as good as tiling is
the threshold to tile below. Run as measured (benchmarks/results/realimages.md):

    .venv/bin/python benchmarks/tile_threshold.py --threads 1 --seeds 0,1 --sizes 6,9,12,15,18,21 \
        --epochs 60 --lr 3e-3 --work /work/tilerun \
        --json-out benchmarks/results/cpu-2026-12-06/tile-threshold.json

A ``--seeds`` value seeds both the line's frames and the training. Stores and trained models in
``--work`` are reused on a rerun. Smoke: --sizes 10 --seeds 0 --train-frames 10 --test-frames 4 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quickstudy.cli.detect import add_training_options, check_train, training_keywords

# Three defect types of clearly different shape, so that few frames teach every class.
DEFECT_TYPES = ("scratch", "pit", "dent")


def median_input_side(samples: Sequence[Any], image_size: int) -> float:
    """The median box side sqrt(w*h) of ``samples``, each box scaled as its frame is letterboxed to
    ``image_size`` (never enlarged): the number ``needs_tiling`` compares with ``TILE_BELOW``."""
    sides = sorted(
        ((b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1])) ** 0.5
        * min(1.0, image_size / max(s.width, s.height))
        for s in samples
        for b in s.boxes
    )
    if not sides:
        raise ValueError("no boxes")
    return float(sides[len(sides) // 2])


def frame_side(native_median: float, image_size: int, target: float) -> int:
    """The square frame's side that letterboxes boxes of median side ``native_median`` to ``target`` px."""
    return round(native_median * image_size / target)


def native_median(defect_size: int, side: int, seed: int, frames: Sequence[int]) -> float:
    """The median box side (frame pixels) of the line's ``frames`` at a ``side`` x ``side`` frame."""
    from quickstudy.data.synthetic import SyntheticLine

    line = SyntheticLine(seed=seed, size=defect_size, defect_types=DEFECT_TYPES, frame=(side, side))
    sides = sorted(
        float(((x2 - x1) * (y2 - y1)) ** 0.5) for i in frames for x1, y1, x2, y2 in line.sample(i)[1]
    )
    return sides[len(sides) // 2]


def build_store(
    folder: Path,
    target: float,
    image_size: int,
    defect_size: int,
    train_frames: int,
    test_frames: int,
    seed: int,
) -> dict[str, Any]:
    """A label store ``folder/store.qs`` of the line's frames (``train_frames`` TRAIN, then ``test_frames``
    TEST) whose TRAIN boxes letterbox to a median side of about ``target`` px at ``image_size``; returns
    the frame side and the median reached (frames no smaller than ``image_size``, so a target above the
    defects' own median side is refused)."""
    from quickstudy.data.synthetic import SyntheticLine
    from quickstudy.labels import Store

    frames = range(train_frames)
    # every frame side draws other frames (and a large defect fits a small frame less often), so the
    # median moves by some 10% from side to side: a first estimate, then the nearest of a few sides
    first = max(
        defect_size, frame_side(native_median(defect_size, defect_size, seed, frames), image_size, target)
    )
    estimate = max(
        defect_size, frame_side(native_median(defect_size, first, seed, frames), image_size, target)
    )
    candidates = sorted({max(defect_size, round(estimate * (1 + 0.04 * k))) for k in range(-3, 4)})
    side = min(
        candidates,
        key=lambda c: abs(native_median(defect_size, c, seed, frames) * min(1.0, image_size / c) - target),
    )
    if side < max(image_size, defect_size):
        raise ValueError(
            f"target {target:g} px: the frame would be {side} px, under the input ({image_size}) or the "
            f"defects' window ({defect_size}); give a smaller target or a larger --defect-size"
        )
    path = folder / "store.qs"
    if not path.exists():
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        line = SyntheticLine(seed=seed, size=defect_size, defect_types=DEFECT_TYPES, frame=(side, side))
        images = line.imported_images(folder / "frames", range(train_frames), split="train")
        images += line.imported_images(
            folder / "frames", range(train_frames, train_frames + test_frames), split="test"
        )
        with Store.open(folder / "store.partial.qs") as store:
            store.import_images(images, source="synthetic line", add_classes=True)
        (folder / "store.partial.qs").rename(path)
    with Store.open(path, create=False) as store:
        reached = median_input_side(store.samples("train"), image_size)
    return {"frame": side, "median_input_side": round(reached, 2), "store": str(path)}


def run_arm(store_path: Path, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Train (unless ``out`` already holds the model) and score on TEST, as `quickstudy train` and
    `quickstudy eval --split test` do."""
    from quickstudy.detect.evaluation import evaluate_detector
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.training import train_detector
    from quickstudy.detect.versions import ModelFolder
    from quickstudy.labels import Store

    with Store.open(store_path, create=False) as store:
        started = time.perf_counter()
        trained = not ModelFolder(out).numbers()
        if trained:
            train_detector(store, out, **options)
        seconds = time.perf_counter() - started
        predictor = Predictor.from_dir(out)
        report = evaluate_detector(predictor, store.samples("test"))
    return {
        "model_tiles": predictor.model.config.tiling,
        "train_seconds": round(seconds, 1) if trained else None,  # with calibration; None: reused
        "mAP50": round(report["mAP50"], 4),
        "AP50_agnostic": round(report["AP50_agnostic"], 4),
        "recall50_agnostic": round(report["AR100_agnostic_50"], 4),
        "defect_present_recall": report["defect_present"]["recall"],
        "ms_per_image": round(report["ms_per_image"], 1),
    }


def cli_commands(args: argparse.Namespace, store: str, out: Path, tiling: str, seed: int) -> list[str]:
    """The `quickstudy` commands that give the same numbers."""
    train = (
        f"quickstudy train --store {store} --out {out} --arch {args.arch} --image-size {args.image_size} "
        f"--tiling {tiling} --epochs {args.epochs} --seed {seed}"
    )
    for option in ("batch_size", "lr"):
        if getattr(args, option) is not None:
            train += f" --{option.replace('_', '-')} {getattr(args, option)}"
    return [train, f"quickstudy eval --model {out} --store {store} --split test --json"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_options(parser)
    parser.set_defaults(arch="tiny", epochs=30, image_size=128)
    parser.add_argument(
        "--sizes", default="6,9,12,15,18,21", help="target median box sides S1,S2,... (input px)"
    )
    parser.add_argument(
        "--seeds", default="0", help="K1,K2,...: one store and two trainings per seed and size"
    )
    parser.add_argument("--defect-size", type=int, default=128, help="the line's defect window (its size)")
    parser.add_argument("--train-frames", type=int, default=60)
    parser.add_argument("--test-frames", type=int, default=20)
    parser.add_argument("--work", type=Path, required=True, help="folder for the stores and models")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.tiling != "auto":
        parser.error("--tiling: the benchmark trains with --tiling on and off itself")
    if args.image_size == "auto":
        parser.error("--image-size: give a number; the sizes are measured at a fixed input size")
    check_train(args)

    import torch

    torch.set_num_threads(args.threads)
    sizes = [float(s) for s in args.sizes.split(",")]
    seeds = [int(k) for k in args.seeds.split(",")]
    started = time.perf_counter()
    runs = []
    skipped = []
    for seed in seeds:  # seed by seed, so that a run cut short has whole sweeps
        for target in sizes:
            folder = args.work / f"s{target:g}-seed{seed}"
            try:
                built = build_store(
                    folder,
                    target,
                    args.image_size,
                    args.defect_size,
                    args.train_frames,
                    args.test_frames,
                    seed,
                )
            except ValueError as error:
                skipped.append({"target": target, "seed": seed, "why": str(error)})
                print(f"skipped: {error}", flush=True)
                continue
            for tiling in ("on", "off"):
                args.seed = seed
                options = {**training_keywords(args), "tiling": tiling}
                out = folder / f"tiling-{tiling}"
                result = run_arm(Path(built["store"]), out, options)
                runs.append(
                    {
                        "target": target,
                        "seed": seed,
                        **built,
                        **result,
                        "tiling": tiling,
                        "commands": cli_commands(args, built["store"], out, tiling, seed),
                    }
                )
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "commands"}), flush=True)
    table = summary(runs)
    for row in table:
        print(
            f"s={row['median_input_side']:5.1f}  mAP50 tiles {row['mAP50_on']:.3f} whole {row['mAP50_off']:.3f}"
            f"  recall tiles {row['recall_on']:.3f} whole {row['recall_off']:.3f}"
        )
    report = {
        "command": " ".join(sys.argv),
        "defect_types": DEFECT_TYPES,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "summary": table,
        "skipped": skipped,
        "runs": runs,
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def summary(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target size, the seeds' mean of each arm's mAP50 and recall, and the median input side reached."""
    rows = []
    for target in sorted({r["target"] for r in runs}):
        mine = [r for r in runs if r["target"] == target]

        def mean(key: str, tiling: str, mine: list[dict[str, Any]] = mine) -> float:
            return round(statistics.fmean(r[key] for r in mine if r["tiling"] == tiling), 4)

        rows.append(
            {
                "target": target,
                "median_input_side": round(statistics.fmean(r["median_input_side"] for r in mine), 1),
                "frame": sorted({r["frame"] for r in mine}),
                "seeds": sorted({r["seed"] for r in mine}),
                **{f"mAP50_{t}": mean("mAP50", t) for t in ("on", "off")},
                **{f"recall_{t}": mean("recall50_agnostic", t) for t in ("on", "off")},
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
