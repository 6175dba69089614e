"""Small helpers shared by the command modules: JSON or table output, the data root."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table


def add_data_root(parser: Any) -> None:
    parser.add_argument(
        "--data-root",
        help="folder holding known datasets laid out as neu-det/ and omniglot/ "
        "(default: $QUICKSTUDY_DATA, else ./data)",
    )


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False, default=str))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console().print(table)
