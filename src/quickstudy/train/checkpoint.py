"""Checkpoints that survive a crash: written to a temporary file, flushed, then renamed into place."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from quickstudy.errors import QuickstudyError

FORMAT = "quickstudy-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A run folder means its ``checkpoint.pt``; a file path is taken as it is."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically: a reader (or a crash) sees the old file or the new one, never half.

    >>> payload = {"kind": "fewshot", "model": model.state_dict()}  # doctest: +SKIP
    >>> save_checkpoint("runs/x/checkpoint.pt", payload)  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], kind: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, checking that it is one and of ``kind``.

    ``path`` may be the file or the run folder that holds ``checkpoint.pt``.
    """
    file = checkpoint_path(path)
    if not file.exists():
        raise QuickstudyError(f"{file}: checkpoint not found")
    try:
        payload = torch.load(file, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise QuickstudyError(f"{file}: not a readable checkpoint (corrupt or truncated: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise QuickstudyError(f"{file}: not a quickstudy checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise QuickstudyError(
            f"{file}: written by a newer quickstudy (checkpoint format {payload['format_version']}); upgrade"
        )
    if kind is not None and payload.get("kind") != kind:
        raise QuickstudyError(f"{file}: this is a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload
