"""The ``quickstudy`` command.

Each module of this package defines ``register(subparsers)``, which adds its sub-commands; each
sub-command sets ``func`` (called with the parsed arguments, returns an exit status) and, where its
options constrain each other, ``check`` (called first; raises :class:`QuickstudyError`, reads and
writes nothing, so a test can run it on every command line of the README). Only the module
of the command being run is imported, so that ``quickstudy data stats`` does not pay for importing
torch. Nothing in the library imports it; the detector benchmarks take `quickstudy train`'s options
from :mod:`quickstudy.cli.detect`, so that what they measure is what the command gives.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from quickstudy import __version__
from quickstudy.errors import QuickstudyError

# command -> (module in this package that registers it, one-line help shown by `quickstudy --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the whole story in minutes on a built-in defect line, with an HTML report"),
    "data": ("data", "import, inspect, split and export labelled images"),
    "taxonomy": ("taxonomy", "show and change class definitions (journaled, undoable)"),
    "train": ("detect", "train the multi-task defect detector on a label store"),
    "predict": ("detect", "detect defects in images with a trained model"),
    "eval": ("detect", "evaluate a detector on a split of a label store (COCO mAP, image-level P/R)"),
    "learn": ("detect", "add a new defect type to a model from a few marked images"),
    "models": ("detect", "list, compare and choose model versions"),
    "suggest": (
        "detect",
        "the unlabelled images to look at next: most likely a defect no known type explains, or the type being taught",
    ),
    "export": ("export", "write a model version as an ONNX folder that predicts without torch"),
    "fewshot": ("fewshot", "train and evaluate few-shot learners (ProtoNet, MAML, ANIL, ...)"),
    "multitask": ("multitask", "train and evaluate multi-task learners (shared, FiLM, MMoE, ...)"),
    "pretrain": ("pretrain", "self-supervised pretraining of backbones on unlabelled images"),
    "serve": ("serve", "the REST API over a label store and a model (docs at /docs)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` (its module imported and registered), or the overview of all."""
    parser = argparse.ArgumentParser(
        prog="quickstudy",
        description="Learn new visual defect types from a handful of examples.",
    )
    parser.add_argument("--version", action="version", version=f"quickstudy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        module = importlib.import_module(f"{__name__}.{COMMANDS[command][0]}")
        module.register(subparsers)
    else:
        for name, (_, help_text) in COMMANDS.items():
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "check", None):
            args.check(args)
        return int(args.func(args) or 0)
    except QuickstudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `quickstudy ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- keeps Python's exit flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
