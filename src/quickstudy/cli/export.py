"""``quickstudy export``: a model version as an ONNX folder for the torch-free runtime; and what
``quickstudy predict`` does when its ``--model`` is such a folder (no torch imported)."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from quickstudy.deploy.export import export_onnx
    from quickstudy.deploy.runtime import GRAPHS, MEMORY_JSON, MEMORY_NPZ

    out = export_onnx(args.model, args.out, args.version)
    print(f"wrote {out}: {', '.join([*GRAPHS, MEMORY_JSON, MEMORY_NPZ])} (checked against the torch model)")
    print(f"predict with: quickstudy predict --model {out} IMAGE...")
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
