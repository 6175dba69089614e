"""Checkpoints that survive a crash: written to a temporary file, flushed, then renamed into place.

They are read with ``torch.load(weights_only=True)``: a checkpoint may hold tensors and plain containers
(dict, list, tuple, str, int, float, bool, None) only, because unpickling anything else can run code.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
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
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(error))
        if refused:
            raise QuickstudyError(
                f"{file}: holds Python objects other than tensors and plain containers ({refused.group(1)}), "
                "which quickstudy does not unpickle because that can run code; if you wrote this file "
                f"yourself, convert it once with `quickstudy models upgrade --model {file}`"
            ) from None
        raise QuickstudyError(f"{file}: not a readable checkpoint (corrupt or truncated)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise QuickstudyError(f"{file}: not a readable checkpoint (corrupt or truncated: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise QuickstudyError(f"{file}: not a quickstudy checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise QuickstudyError(
            f"{file}: written by a newer quickstudy (checkpoint format {payload['format_version']}); upgrade"
        )
    if kind is not None and payload.get("kind") != kind:
        raise QuickstudyError(f"{file}: this is a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload


def upgrade_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Re-save a checkpoint written by an older quickstudy so that it holds only tensors and plain data.

    What older versions stored besides those — NumPy scalars and arrays, paths — is admitted to torch's
    restricted unpickler by name (:data:`_UPGRADABLE`, types that build values and run nothing else), and
    becomes floats, ints, tensors and strings; a file holding anything else is still refused.
    """
    file = checkpoint_path(path)
    try:
        with torch.serialization.safe_globals(_UPGRADABLE):
            payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(error))
        what = refused.group(1) if refused else "an object it does not allow"
        raise QuickstudyError(f"{file}: holds {what}, which cannot be converted to plain data") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise QuickstudyError(f"{file}: not a readable checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise QuickstudyError(f"{file}: not a quickstudy checkpoint")
    save_checkpoint(file, _plain(payload, str(file)))
    load_checkpoint(file)
    return file


def _numpy_globals() -> list[Any]:
    """NumPy's constructors of scalars, arrays and dtypes, as pickles name them."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    dtypes = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]
    return (
        [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, np.str_]
        + [type(np.dtype(t)) for t in dtypes]
        + [type(np.dtype("U1"))]
    )


_UPGRADABLE: list[Any] = [*_numpy_globals(), pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath]


def _plain(value: Any, where: str) -> Any:
    if type(value).__module__ == "numpy":  # first: numpy.float64 is also a float
        return torch.from_numpy(value.copy()) if getattr(value, "shape", ()) else value.item()
    if value is None or isinstance(value, str | bool | int | float | torch.Tensor):
        return value
    if isinstance(value, dict):
        return {key: _plain(item, where) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(item, where) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise QuickstudyError(
        f"{where}: holds a {type(value).__qualname__}, which cannot be converted to plain data"
    )
