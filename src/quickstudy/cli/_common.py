"""Small helpers shared by the command modules: JSON or table output, the options every command
spells the same way (data root, device, mixed precision, the trained thing)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table


def add_data_root(parser: Any, *, remembered: bool = False) -> None:
    where = "the run's, else " if remembered else ""
    parser.add_argument(
        "--data-root",
        help="folder holding known datasets laid out as neu-det/ and omniglot/ "
        f"(default: {where}$QUICKSTUDY_DATA, else ./data)",
    )


def device(text: str) -> str:
    """``--device``: ``auto`` is CUDA when available, else the CPU; anything else as torch spells it.
    Without torch (the base install, which predicts with exported models) every device is the CPU."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: auto, cpu, cuda, cuda:1 ...") from None
    return text


def share(text: str) -> float:
    """An option's share of images: a number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def non_negative(text: str) -> int:
    """An option's count: a whole number, 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_device(parser: Any) -> None:
    # argparse passes the default through `type` too, so handlers always see a resolved device.
    parser.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1 ... (default: auto)",
    )


def add_amp(parser: Any, *, default: bool = False, why: str = "") -> None:
    """``--amp/--no-amp``; ``why`` says why a command's default is on (measured numbers used it)."""
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=default,
        help=f"bfloat16 autocast on CUDA; no effect on the CPU (default: {'on' if default else 'off'}{why})",
    )


class _PositionalAlias(argparse.Action):
    """An optional positional that sets its destination only when given (argparse would store None)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if values is not None:
            setattr(namespace, self.dest, values)


def add_adapt_recognizer(parser: Any, help_text: str) -> None:
    """``--adapt-recognizer [on|off|auto]`` (alone: on; default auto), read as ``learn_class``'s
    ``recognizer``: True, False or None (learn decides)."""
    parser.add_argument(
        "--adapt-recognizer",
        nargs="?",
        const=True,
        default=None,
        type=lambda text: {"on": True, "off": False, "auto": None}[text],
        metavar="{on,off,auto}",
        help=help_text,
    )


def add_model(parser: Any, help_text: str, *, old: str) -> None:
    """``--model DIR`` (required), with the spelling ``old`` (an option, or a positional when it has
    no dashes) kept one release as a hidden alias."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", metavar="DIR", help=help_text)
    if old.startswith("-"):
        group.add_argument(old, dest="model", help=argparse.SUPPRESS)
    else:
        group.add_argument("model", nargs="?", action=_PositionalAlias, help=argparse.SUPPRESS)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False, default=str))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console().print(table)
