"""Where known datasets live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(arg: str | os.PathLike[str] | None = None) -> Path:
    """``arg`` (``--data-root``), else ``$QUICKSTUDY_DATA``, else ``./data``.

    The folder is laid out as ``../shared/data``: ``neu-det/`` and ``omniglot/``.
    """
    return Path(arg or os.environ.get("QUICKSTUDY_DATA") or "data")
