"""The predictor of the model folder's current version, loaded once and loaded again when the
current version changes (a learn job, ``POST /api/models/use``, or ``quickstudy models use``
run beside the server)."""

from __future__ import annotations

import threading
from pathlib import Path

from quickstudy.detect import ModelFolder, Predictor


class CurrentModel:
    def __init__(self, model_dir: Path, device: str) -> None:
        self.folder = ModelFolder(model_dir)
        self._device = device
        self._lock = threading.Lock()
        self._loaded: tuple[int, Predictor] | None = None

    def get(self) -> tuple[int, Predictor]:
        """``(version, predictor)`` of the current version."""
        version = self.folder.current()
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                self._loaded = (version, Predictor.from_dir(self.folder.root, version, self._device))
            return self._loaded
