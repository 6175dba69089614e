"""The ``quickstudy`` command. Each module of this package adds one group of sub-commands.

A module here defines ``register(subparsers)``, which adds its sub-commands; each sub-command
sets ``func`` (called with the parsed arguments, returns an exit status). Modules are found by
name, so a new command group is a new file. Nothing outside this package imports it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from quickstudy import __version__
from quickstudy.errors import QuickstudyError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quickstudy",
        description="Learn new visual defect types from a handful of examples.",
    )
    parser.add_argument("--version", action="version", version=f"quickstudy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):  # _common, __main__
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QuickstudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
