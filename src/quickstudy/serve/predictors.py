"""What the server predicts with: a model folder's current version (torch), or an export folder
(onnxruntime, no torch). Each predictor is loaded once and loaded again when what it reads changes:
the model folder's current version (a learn job, ``POST /api/models/use``, ``quickstudy models use``
run beside the server), or the export's class memory (rewritten by ``learn`` and ``models use`` on
its model folder)."""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quickstudy.deploy.runtime import MEMORY_JSON, OnnxPredictor, is_export
from quickstudy.errors import QuickstudyError

if TYPE_CHECKING:
    from quickstudy.detect import ModelFolder, Predictor

MODEL, EXPORT = "model", "export"
# what needs a model folder's checkpoints: an export holds one version's network and class memory
NEEDS_MODEL_FOLDER = ("learn", "models use", "models undo", "unknown groups")


class CurrentModel(ABC):
    """What the server predicts with, and which of its features that leaves off."""

    kind: str
    disabled: tuple[str, ...]

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    @abstractmethod
    def version(self) -> int:
        """The model version predictions come from."""

    @abstractmethod
    def identity(self) -> str:
        """What the prediction cache keys this model's predictions by: changes whenever they may."""

    @abstractmethod
    def get(self) -> tuple[int, Predictor | OnnxPredictor]:
        """``(version, predictor)`` of the current version."""

    @abstractmethod
    def model_folder(self, feature: str) -> ModelFolder:
        """The model folder ``feature`` (learn, models use, models undo) works on."""

    @abstractmethod
    def versions(self) -> list[dict[str, Any]]:
        """The versions, oldest first, as ``GET /api/models`` lists them."""


class FolderModel(CurrentModel):
    """A model folder: every feature on."""

    kind = MODEL
    disabled: tuple[str, ...] = ()

    def __init__(self, model_dir: Path, device: str) -> None:
        from quickstudy.detect import ModelFolder  # torch: only a model folder needs it

        super().__init__(Path(model_dir))
        self.folder = ModelFolder(model_dir)
        self._device = device
        self._loaded: tuple[int, Predictor] | None = None

    def version(self) -> int:
        return self.folder.current()

    def identity(self) -> str:
        # the version file's time too: an undone version's number can be written again by a later learn
        version = self.folder.current()
        return f"{self.root.resolve()}#{version}@{self.folder.path(version).stat().st_mtime_ns}"

    def get(self) -> tuple[int, Predictor]:
        from quickstudy.detect import Predictor

        version = self.folder.current()
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                self._loaded = (version, Predictor.from_dir(self.folder.root, version, self._device))
            return self._loaded

    def model_folder(self, feature: str) -> ModelFolder:
        return self.folder

    def versions(self) -> list[dict[str, Any]]:
        current = self.folder.current()
        return [v.listing(current) for v in self.folder.versions()]


class ExportModel(CurrentModel):
    """An export folder: predicts on the CPU through onnxruntime; what needs the model folder is off.
    Loaded at once, so that a broken export stops the server at start with its one-line reason."""

    kind = EXPORT
    disabled = NEEDS_MODEL_FOLDER

    def __init__(self, export_dir: Path) -> None:
        super().__init__(Path(export_dir))
        self._loaded = self._load()

    def _memory_stamp(self) -> tuple[int, int]:
        # the class memory is replaced whole (os.replace), so a rewrite changes its inode or its time
        stat = (self.root / MEMORY_JSON).stat()
        return stat.st_ino, stat.st_mtime_ns

    def _load(self) -> tuple[tuple[int, int], dict[str, Any], OnnxPredictor]:
        stamp = self._memory_stamp()
        predictor = OnnxPredictor(self.root)
        memory = json.loads((self.root / MEMORY_JSON).read_text())
        if not isinstance(memory.get("model_version"), int):
            raise QuickstudyError(f"{self.root / MEMORY_JSON}: names no model version it was exported from")
        return stamp, memory, predictor

    def _current(self) -> tuple[dict[str, Any], OnnxPredictor]:
        with self._lock:
            if self._loaded[0] != self._memory_stamp():
                self._loaded = self._load()
            return self._loaded[1], self._loaded[2]

    @property
    def source(self) -> str:
        """The model folder the export was made from."""
        return str(self._loaded[1].get("model"))

    def version(self) -> int:
        """The version of the source model folder whose class memory the export holds."""
        return int(self._current()[0]["model_version"])

    def identity(self) -> str:
        return f"{self.root.resolve()}#export@{self._memory_stamp()}"

    def get(self) -> tuple[int, OnnxPredictor]:
        memory, predictor = self._current()
        return int(memory["model_version"]), predictor

    def model_folder(self, feature: str) -> ModelFolder:
        """Refused in one line (the app answers 409): an export cannot learn or change version."""
        raise QuickstudyError(
            f"{feature} needs the model folder: {self.root} is an export, which cannot learn or change "
            f"version; serve its model folder ({self.source}) with --model for {feature}"
        )

    def versions(self) -> list[dict[str, Any]]:
        """The one version the export holds: the source's version its class memory was written from."""
        memory, predictor = self._current()
        return [
            {
                "version": int(memory["model_version"]),
                "current": True,
                "classes": predictor.classes,
                "note": f"export of {memory.get('model')}",
                "taxonomy_version": memory.get("taxonomy_version"),
                "created": "",
            }
        ]


def open_model(path: str | os.PathLike[str], device: str) -> CurrentModel:
    """An export folder is served as an export; anything else as a model folder."""
    return ExportModel(Path(path)) if is_export(path) else FolderModel(Path(path), device)
