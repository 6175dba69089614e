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
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

from quickstudy.data import geometry
from quickstudy.data.images import as_channels, read_image
from quickstudy.detect.data import letterbox
from quickstudy.detect.memory import UNKNOWN as UNKNOWN  # re-exported: what predict calls a new type
from quickstudy.detect.memory import Detection
from quickstudy.detect.model import DefectDetector, detector_from_payload
from quickstudy.detect.versions import ModelFolder
from quickstudy.errors import QuickstudyError

ImageInput = str | os.PathLike[str] | np.ndarray


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
        # image -> what the last predict converted to fit the model (colour read as grey, or the reverse)
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
        embeddings): the expensive part, independent of the class memory. A tiling model sees each
        image as overlapping full-resolution tiles whose proposals are merged by NMS."""
        results: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            views: list[tuple[int, torch.Tensor, float, tuple[int, int]]] = []
            extents: list[torch.Tensor] = []
            for k, image in enumerate(images[start : start + self.batch_size]):
                where = str(image) if isinstance(image, str | os.PathLike) else f"image {start + k}"
                image_views, (width, height) = self._views(image, where)
                views.extend((k, *view) for view in image_views)
                extents.append(torch.tensor([width, height, width, height], dtype=torch.float32))
            per_image: list[list[dict[str, torch.Tensor]]] = [[] for _ in extents]
            for first in range(0, len(views), self.batch_size):
                chunk = views[first : first + self.batch_size]
                batch = torch.stack([tensor for _, tensor, _, _ in chunk]).to(self.model.device).float() / 255
                features = self.model.features(batch)
                found = self.model.propose(features, self.model.localize(features), batch.shape[-2:])
                for (k, _, scale, (x0, y0)), out in zip(chunk, found, strict=True):
                    out = {key: value.float().cpu() for key, value in out.items()}
                    out["boxes"] = out["boxes"] / scale + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
                    per_image[k].append(out)
            for outs, extent in zip(per_image, extents, strict=True):
                out = outs[0] if len(outs) == 1 else self._merged(outs)
                # a box reaching into the padding ends at the image's edge
                out["boxes"] = torch.minimum(out["boxes"], extent)
                results.append(out)
        return results

    def _views(
        self, image: ImageInput, where: str
    ) -> tuple[list[tuple[torch.Tensor, float, tuple[int, int]]], tuple[int, int]]:
        """What the network sees of one image: ``(uint8 [C, S, S], scale, (x0, y0))`` per view, the
        letterboxed whole or, for a tiling model, each full-resolution tile at its corner; and the
        image's (width, height)."""
        config = self.model.config
        pixels, note = as_channels(as_pixels(image, where), config.channels, where)
        if note:
            self.notes[where] = note
        height, width = pixels.shape[:2]
        if not config.tiling:
            tensor, scale = letterbox(pixels, config.image_size)
            return [(tensor, scale, (0, 0))], (width, height)
        tiles = [
            (torch.from_numpy(geometry.crop(pixels, x0, y0, config.image_size)), 1.0, (x0, y0))
            for x0, y0 in geometry.tile_origins(width, height, config.image_size)
        ]
        return tiles, (width, height)

    def _merged(self, outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One image's proposals from its tiles: where tiles overlap, the same defect is proposed twice
        (by the same head: each head's proposals are its own)."""
        merged = {key: torch.cat([out[key] for out in outs]) for key in outs[0]}
        keep = batched_nms(
            merged["boxes"], merged["defect_scores"], merged["head"], self.model.config.proposal_nms
        )
        return {key: value[keep] for key, value in merged.items()}

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
        self.notes = {}  # this call's conversions only: a long-running server would pile them up
        return [self.name_detections(out, score_threshold) for out in self.raw(list(images))]

    def predict_embedded(self, images: Sequence[ImageInput]) -> list[list[tuple[Detection, torch.Tensor]]]:
        """:meth:`predict` at the operating thresholds, each detection with its unit embedding ``[D]``:
        its proposal's (every class named on one box shares it), found by the box it was named from."""
        self.notes = {}
        result = []
        for out in self.raw(list(images)):
            rows = {tuple(float(v) for v in box): i for i, box in enumerate(out["boxes"])}
            result.append([(d, out["embeddings"][rows[d.box]]) for d in self.name_detections(out, None)])
        return result

    def name_detections(self, out: dict[str, torch.Tensor], score_threshold: float | None) -> list[Detection]:
        """The named detections of one image's raw output (:meth:`ClassMemory.name_detections`)."""
        return self.model.memory.name_detections(out, score_threshold)


def image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Check that each path is a file before any work starts (one clear error for the first missing)."""
    result = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise QuickstudyError(f"{path}: no such image file")
        result.append(path)
    return result
