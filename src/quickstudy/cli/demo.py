"""``quickstudy demo``: the whole story in a few minutes, ending with an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quickstudy.cli._common import add_adapt_recognizer, add_device, non_negative, share
from quickstudy.demo import DemoSettings, run_demo


def register(subparsers: Any) -> None:
    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo",
        help="see everything quickstudy is for in a few minutes (no data needed)",
        description="Generates a defect line (or reads --data), imports it into a fresh label store, trains "
        "the detector with half of the class labels missing, shows a new defect type reported as "
        "'unknown' and then learned from 5 images, splits a type into two sub-types, and writes "
        "report.html. The last line printed is the report's path.",
    )
    parser.add_argument(
        "--out", type=Path, default=defaults.out, help=f"folder for the run (default: {defaults.out})"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="a Pascal VOC dataset instead of the built-in line (NEU-DET: P3's new types; "
        "any other: its last class is new, its first two are merged and then split)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help=f"training epochs (default: {defaults.epochs})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"training batch size (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help=f"training learning rate (default: {defaults.lr})"
    )
    parser.add_argument(
        "--synthetic-defects",
        type=float,
        default=defaults.synthetic_defects,
        help="share of training images given a synthetic defect of no named type (as `quickstudy "
        f"train --synthetic-defects`; default: {defaults.synthetic_defects})",
    )
    parser.add_argument(
        "--squeeze",
        type=share,
        default=defaults.squeeze,
        help="share of training images squeezed along one axis (as `quickstudy train --squeeze`; "
        f"default: {defaults.squeeze})",
    )
    parser.add_argument(
        "--proposals-per-level",
        type=non_negative,
        default=defaults.proposals_per_level,
        help="each localizer level keeps its best N proposals ahead of the rest, as `quickstudy train "
        f"--proposals-per-level` (default: {defaults.proposals_per_level})",
    )
    parser.add_argument(
        "--fine-recognition",
        action=argparse.BooleanOptionalAction,
        default=defaults.fine_recognition,
        help="the recognition head also reads the network's stride-4 stage, as `quickstudy train "
        f"--fine-recognition` (default: {'on' if defaults.fine_recognition else 'off'})",
    )
    parser.add_argument(
        "--adapt-localizer",
        action=argparse.BooleanOptionalAction,
        help="step 3: also teach the learned types' localization head the new type's support boxes, as "
        "`quickstudy learn --adapt-localizer` (default: learn decides by itself)",
    )
    add_adapt_recognizer(
        parser,
        "steps 3 and 4: also tune the recognition head on each learned type's support boxes, as "
        "`quickstudy learn --adapt-recognizer` (on, off or auto; default: auto; alone: on)",
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=defaults.train_images,
        help=f"built-in line: training images (default: {defaults.train_images})",
    )
    parser.add_argument(
        "--test-images",
        type=int,
        default=defaults.test_images,
        help=f"built-in line: test images (default: {defaults.test_images})",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="the line's image size and the detector's input (default: 96, or the data's)",
    )
    parser.add_argument(
        "--limit", type=int, help="--data: use about this many images (every k-th), for a quick look"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help=f"CPU threads for torch (default: {defaults.threads}; 0: torch's default)",
    )
    add_device(parser)
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    run_demo(
        DemoSettings(
            out=args.out,
            data=args.data,
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            synthetic_defects=args.synthetic_defects,
            squeeze=args.squeeze,
            proposals_per_level=args.proposals_per_level,
            fine_recognition=args.fine_recognition,
            adapt_localizer=args.adapt_localizer,
            adapt_recognizer=args.adapt_recognizer,
            train_images=args.train_images,
            test_images=args.test_images,
            image_size=args.image_size,
            limit=args.limit,
            device=args.device,
            threads=args.threads or None,
        )
    )
    return 0
