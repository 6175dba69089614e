"""What one ``quickstudy serve`` process serves: the store, the model folder, who may call it, and
the limits on what a client may send."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quickstudy.labels.store import Store

MEGABYTE = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * MEGABYTE
# 40 megapixels decode to 120 MB of RGB: far above a line camera's frame, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ServeSettings:
    """``tokens`` maps each accepted bearer token to the author its edits carry; ``None`` means the
    client names the author (one shared token)."""

    store: Path
    model: Path
    tokens: Mapping[str, str | None]
    device: str = "cpu"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    # a background thread predicts every image into the cache beside the store (the gallery's filters)
    fill_cache: bool = True

    def open_store(self) -> Store:
        """A connection of this request's own: SQLite connections stay in the thread that made them,
        and WAL lets the CLI and other requests read and write the same store meanwhile."""
        return Store.open(self.store, create=False)

    @property
    def uploads(self) -> Path:
        """The folder beside the store that holds uploaded images, each named by its content hash."""
        return self.store.parent / f"{self.store.name}.images"
