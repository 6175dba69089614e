"""Resuming a run folder: only the run that wrote it may go on in it.

A folder's ``checkpoint.pt`` records its run's options. Started again with other options, a run
would silently go on with the old one's weights, optimizer state and schedule, so it is refused
with the options that differ named: ``runs/a: holds a run with another lr: lr=0.001, not 0.002; use
another --out, or delete runs/a to start over``. The :class:`~quickstudy.train.Trainer` checks
this before it resumes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from quickstudy.errors import QuickstudyError

_UNSET = object()  # an option one of the two runs does not have


def check_resumable(
    file: Path, saved: Mapping[str, Any], config: Mapping[str, Any], may_change: Collection[str] = ()
) -> None:
    """Refuse to resume the run whose checkpoint ``file`` recorded the options ``saved`` with the
    options ``config``: every option must be equal except the top-level ones named in
    ``may_change`` (e.g. ``steps``, to train on). Nested options are compared one by one (``a.b``);
    tuples equal lists, as a checkpoint may give either back."""
    before, now = _flat(saved), _flat(config)
    differs = [
        key
        for key in sorted(before.keys() | now.keys())
        if key.split(".")[0] not in may_change and before.get(key, _UNSET) != now.get(key, _UNSET)
    ]
    if differs:
        folder = file.parent
        details = "; ".join(
            f"{key}={_short(before.get(key, _UNSET))}, not {_short(now.get(key, _UNSET))}" for key in differs
        )
        raise QuickstudyError(
            f"{folder}: holds a run with another {', '.join(differs)}: {details}; "
            f"use another --out, or delete {folder} to start over"
        )


def _flat(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _plain(value)
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _short(value: Any) -> str:
    text = "unset" if value is _UNSET else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
