"""Images in, named boxes out: pre- and post-processing around a :class:`DefectDetector`.

>>> predictor = Predictor.from_dir("runs/neu")  # doctest: +SKIP
>>> [d.class_name for d in predictor.predict(["crazing_5.jpg"])[0]]  # doctest: +SKIP
['crazing', 'crazing']

Images are paths (any format :func:`quickstudy.data.images.read_image` reads: grayscale, RGB,
RGBA, 16-bit, palette; the EXIF orientation applied) or arrays (``[H, W]`` or ``[H, W, 3|4]``, any
numeric dtype). Each is letterboxed to the model's input size (long side resized, aspect kept, padded)
and boxes are mapped back to its own pixels. A colour image given to a grey model (or the reverse) is
converted, and :attr:`Predictor.notes` says so.

A box whose embedding is farther from every prototype than the class memory's unknown similarity
is reported as ``unknown`` with its class-agnostic defect score, so a new defect type shows up
before anyone has named it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from quickstudy.data.images import as_channels, read_image
from quickstudy.detect.data import letterbox
from quickstudy.detect.model import DefectDetector, detector_from_payload
from quickstudy.detect.versions import ModelFolder
from quickstudy.errors import QuickstudyError

UNKNOWN = "unknown"
ImageInput = str | os.PathLike[str] | np.ndarray


@dataclass(frozen=True)
class Detection:
    """One found defect: ``box`` (x1, y1, x2, y2) in the input image's pixels."""

    box: tuple[float, float, float, float]
    class_name: str
    score: float
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_pixels(image: ImageInput, where: str = "image") -> np.ndarray:
    """A path or array → ``uint8 [H, W]`` (grey) or ``[H, W, 3]`` (colour); a clear error for anything else."""
    if isinstance(image, str | os.PathLike):
        return read_image(image, colour=True)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3]
    if array.ndim not in (2, 3) or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise QuickstudyError(
            f"{where}: expected a [H, W] or [H, W, 3|4] image array, got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        span = high - low if high > low else 1.0
        scale = 255.0 / span if (high > 255 or low < 0 or array.dtype.kind == "f") else 1.0
        offset = low if scale != 1.0 else 0.0
        array = np.clip(np.rint((array - offset) * scale), 0, 255).astype(np.uint8)
    return array


class Predictor:
    """A detector taking user images; its class memory names the boxes and holds the thresholds."""

    def __init__(self, model: DefectDetector, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        # image -> what was converted to fit the model (colour read as grey, or the reverse)
        self.notes: dict[str, str] = {}

    @classmethod
    def from_dir(
        cls, model_dir: str | os.PathLike[str], version: int | None = None, device: str = "cpu"
    ) -> Predictor:
        folder = ModelFolder(model_dir)
        number = folder.current() if version is None else version
        return cls(detector_from_payload(folder.load(number), device, folder.path(number)))

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def operating(self) -> dict[str, float]:
        """Per class, the score threshold calibrated on held-out images."""
        return self.model.memory.operating

    @property
    def unknown_threshold(self) -> float:
        """Below this similarity to every prototype, a box is ``unknown``."""
        return self.model.memory.unknown

    @torch.no_grad()
    def proposals(self, images: Sequence[ImageInput]) -> list[dict[str, torch.Tensor]]:
        """Class-agnostic proposals per image (boxes in the images' pixels, defect scores,
        embeddings): the expensive part, independent of the class memory."""
        size, channels = self.model.config.image_size, self.model.config.channels
        device = self.model.device
        results: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            tensors, scales, extents = [], [], []
            for k, image in enumerate(chunk):
                where = str(image) if isinstance(image, str | os.PathLike) else f"image {start + k}"
                pixels, note = as_channels(as_pixels(image, where), channels, where)
                if note:
                    self.notes[where] = note
                tensor, scale = letterbox(pixels, size)
                tensors.append(tensor)
                scales.append(scale)
                extents.append(torch.tensor([pixels.shape[1], pixels.shape[0]] * 2, dtype=torch.float32))
            batch = torch.stack(tensors).to(device).float() / 255
            features = self.model.features(batch)
            proposals = self.model.propose(features, self.model.localize(features), batch.shape[-2:])
            for out, scale, extent in zip(proposals, scales, extents, strict=True):
                out = {k: v.float().cpu() for k, v in out.items()}
                # back to the image's own pixels; a box reaching into the padding ends at the image's edge
                out["boxes"] = torch.minimum(out["boxes"] / scale, extent)
                results.append(out)
        return results

    def raw(self, images: Sequence[ImageInput]) -> list[dict[str, torch.Tensor]]:
        """The model's output per image (every (box, class) pair) with boxes in the images' pixels."""
        return self.model.classify(self.proposals(images))

    def predict(
        self, images: Sequence[ImageInput], score_threshold: float | None = None
    ) -> list[list[Detection]]:
        """Named detections per image, highest score first. ``score_threshold`` replaces the
        per-class operating thresholds calibrated on held-out images."""
        if isinstance(images, str | os.PathLike | np.ndarray):
            raise QuickstudyError("predict: pass a list of images, not a single image")
        return [self.name_detections(out, score_threshold) for out in self.raw(list(images))]

    def name_detections(self, out: dict[str, torch.Tensor], score_threshold: float | None) -> list[Detection]:
        memory = self.model.memory
        unknown = out["max_similarity"] < memory.unknown
        classes = memory.classes
        names = [classes[int(c)] for c in out["labels"]]
        thresholds = torch.tensor(
            [score_threshold if score_threshold is not None else memory.threshold(n) for n in names]
        )
        unknown_cut = score_threshold if score_threshold is not None else memory.unknown_score
        scores = torch.where(unknown, out["defect_scores"], out["scores"])
        keep = torch.where(unknown, scores >= unknown_cut, scores >= thresholds)
        group = torch.where(unknown, torch.full_like(out["labels"], -1), out["labels"])
        index = torch.nonzero(keep).flatten()
        index = index[batched_nms(out["boxes"][index], scores[index], group[index], 0.5)]
        return [
            Detection(
                tuple(float(v) for v in out["boxes"][i]),  # type: ignore[arg-type]
                UNKNOWN if unknown[i] else names[i],
                float(scores[i]),
                float(out["max_similarity"][i] if unknown[i] else out["similarity"][i]),
            )
            for i in index.tolist()
        ]


def image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Check that each path is a file before any work starts (one clear error for the first missing)."""
    result = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise QuickstudyError(f"{path}: no such image file")
        result.append(path)
    return result
