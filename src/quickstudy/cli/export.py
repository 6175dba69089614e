"""``quickstudy export``: a model version as an ONNX folder for the torch-free runtime; and what
``quickstudy predict`` does when its ``--model`` is such a folder (no torch imported)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quickstudy.cli._common import print_json, print_table
from quickstudy.errors import QuickstudyError


def cmd_export(args: argparse.Namespace) -> int:
    from quickstudy.deploy.export import export_onnx
    from quickstudy.deploy.runtime import GRAPHS, MEMORY_JSON, MEMORY_NPZ

    out = export_onnx(args.model, args.out, args.version)
    print(f"wrote {out}: {', '.join([*GRAPHS, MEMORY_JSON, MEMORY_NPZ])} (checked against the torch model)")
    print(f"predict with: quickstudy predict --model {out} IMAGE...")
    return 0


def predict_export(args: argparse.Namespace) -> int:
    """``quickstudy predict`` on an export folder (:func:`quickstudy.deploy.runtime.is_export`): the
    same output as on a model folder, from onnxruntime."""
    from quickstudy.deploy.runtime import OnnxPredictor

    folders = [image for image in args.images if Path(image).is_dir()]
    if folders:
        raise QuickstudyError(
            f"{folders[0]}: is a folder; give its images, e.g. {Path(folders[0]) / '*.jpg'}"
        )
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise QuickstudyError(f"{missing[0]}: no such image file")
    paths = [Path(image) for image in args.images]
    predictor = OnnxPredictor(args.model)
    results = predictor.predict(paths, score_threshold=args.threshold)
    for note in predictor.notes.values():
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(
            [
                {"image": str(p), "detections": [d.to_dict() for d in found]}
                for p, found in zip(paths, results, strict=True)
            ]
        )
        return 0
    rows = [
        [str(p), d.class_name, f"{d.score:.3f}", " ".join(f"{v:.0f}" for v in d.box)]
        for p, found in zip(paths, results, strict=True)
        for d in found
    ]
    print_table("detections", ["image", "class", "score", "box (x1 y1 x2 y2)"], rows)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="a model version as an ONNX folder that predicts without torch",
        description="Writes the network as ONNX (checked against the torch model on a probe image) and "
        "the class memory beside it as plain data; `quickstudy learn` and `quickstudy models use` on the "
        "model rewrite that class memory, so a new class needs no new export.",
    )
    export.add_argument(
        "--model", required=True, metavar="DIR", help="model folder (from `quickstudy train`)"
    )
    export.add_argument("--version", type=int, help="the version to export (default: the current one)")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only one)")
    export.add_argument("--out", required=True, metavar="OUTDIR", help="the export folder to write")
    export.set_defaults(func=cmd_export)
