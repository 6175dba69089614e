"""The deployed detector: an export folder (see :mod:`quickstudy.deploy`) run by onnxruntime, with
numpy and Pillow around it and no torch, giving the detections the torch
:class:`~quickstudy.detect.predictor.Predictor` gives.

>>> predictor = OnnxPredictor("deploy/neu")  # doctest: +SKIP
>>> [d.class_name for d in predictor.predict(["crazing_5.jpg"])[0]]  # doctest: +SKIP
['crazing', 'crazing']

The network's two graphs are as exported; what follows them is numpy here, step for step as the
torch detector does it: top candidates, greedy NMS, the class memory's (box, class) scores,
per-class NMS, and naming (``unknown`` below the memory's similarity).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quickstudy.data import geometry
from quickstudy.data.images import as_channels, read_image
from quickstudy.errors import QuickstudyError

FORMAT = "quickstudy-onnx-detector"
FORMAT_VERSION = 1
DENSE, EMBED = "dense.onnx", "embed.onnx"
GRAPHS = (DENSE, EMBED)
# the dense graph's outputs of a learned localization head, where the model has one
LEARNED_DENSE = ("learned_scores", "learned_boxes")
MEMORY_JSON, MEMORY_NPZ = "memory.json", "memory.npz"
# metadata key every graph of ours carries, naming which graph it is
GRAPH_KEY = "quickstudy_graph"
UNKNOWN = "unknown"
# the class memory's operating threshold of a class that has none calibrated
DEFAULT_OPERATING = 0.5
# the IoU above which two named detections of the same name are one (as ClassMemory.name_detections)
NAMING_NMS = 0.5
# at most this many abnormal regions of an image become proposals (as the normality memory's)
MAX_REGIONS = 20
# NMS computes the IoUs of this many boxes with all the others at once
NMS_BLOCK = 64

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


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an export folder (rather than a model folder of versions)."""
    return (Path(path) / MEMORY_JSON).is_file() and (Path(path) / DENSE).is_file()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _greedy(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, groups: np.ndarray | None, count: int | None
) -> np.ndarray:
    """Greedy NMS over ``boxes`` by score, high to low (stable), a box suppressing only boxes of its own
    group, stopping at ``count`` kept. A box is decided by the higher-scored boxes alone, so with a
    ``count`` the first 4·count boxes are tried first (as the torch detector's ``first_kept``); the
    IoUs come :data:`NMS_BLOCK` rows at a time with the boxes after them (bounded memory), and a Python
    step per box only reads its row."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    grouped = None if groups is None else groups[order]
    # compared in float64, as torchvision compares its float IoU with the double threshold
    threshold = np.float64(iou_threshold)
    limit = len(order) if count is None else min(len(order), 4 * count)
    while True:
        removed = np.zeros(limit, dtype=bool)
        kept: list[int] = []
        for first in range(0, limit, NMS_BLOCK):
            rows, rest = slice(first, min(first + NMS_BLOCK, limit)), slice(first, limit)
            w = np.minimum(x2[rows, None], x2[None, rest]) - np.maximum(x1[rows, None], x1[None, rest])
            h = np.minimum(y2[rows, None], y2[None, rest]) - np.maximum(y1[rows, None], y1[None, rest])
            inter = np.maximum(w, np.float32(0)) * np.maximum(h, np.float32(0))
            # two boxes of zero area: 0 / 0 is NaN, never above the threshold (torchvision's answer too)
            with np.errstate(invalid="ignore", divide="ignore"):
                suppress = inter / (areas[rows, None] + areas[None, rest] - inter) > threshold
            if grouped is not None:
                suppress &= grouped[rows, None] == grouped[None, rest]
            for i, row in enumerate(suppress, first):
                if removed[i]:
                    continue
                kept.append(i)
                if len(kept) == count:
                    return order[kept]
                removed[first:] |= row
        if limit == len(order) or count == 0:
            return order[np.array(kept, dtype=np.int64)]
        limit = min(len(order), 4 * limit)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, count: int | None = None) -> np.ndarray:
    """Greedy NMS as torchvision's ``nms`` computes it (stable sort by score, high to low; a box goes
    when its IoU with a kept one exceeds ``iou_threshold``), stopping once ``count`` boxes are kept.

    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    >>> nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
    [0, 2]
    """
    return _greedy(boxes, scores, iou_threshold, None, count)


def _candidates(scores: np.ndarray, count: int, floor: float) -> np.ndarray:
    """Indices of the ``count`` highest ``scores`` above ``floor``, high to low."""
    top = np.argsort(-scores, kind="stable")[:count]
    return top[scores[top] > floor]


def ranked_proposals(
    boxes: np.ndarray, scores: np.ndarray, settings: dict[str, float], levels: Sequence[int]
) -> np.ndarray:
    """The proposals kept from one view's dense boxes, as the torch detector's ``ranked_proposals``
    keeps them: top candidates above the score floor, each level's first ``proposals_per_level``
    ahead of the rest where ``levels`` (locations per level) are known, then NMS in that order."""
    threshold, count = settings["proposal_nms"], int(settings["proposals"])
    top = _candidates(scores, int(settings["candidates"]), settings["score_thresh"])
    per_level = int(settings.get("proposals_per_level", 0))
    if not (per_level and levels):
        return top[nms(boxes[top], scores[top], threshold, count)]
    reserved, start = [], 0
    for size in levels:
        level = start + _candidates(
            scores[start : start + size], int(settings["candidates"]), settings["score_thresh"]
        )
        reserved.append(level[nms(boxes[level], scores[level], threshold, per_level)])
        start += size
    ahead = np.concatenate(reserved)
    ahead = ahead[np.argsort(-scores[ahead], kind="stable")]
    top = np.concatenate([ahead, top[~np.isin(top, ahead)]])
    return top[nms(boxes[top], -np.arange(len(top), dtype=np.float32), threshold, count)]


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """:func:`nms` within each group; the kept indices by score, high to low (torchvision's ``batched_nms``).

    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    >>> batched_nms(boxes, np.array([0.8, 0.9], np.float32), np.array([0, 1]), 0.5).tolist()
    [1, 0]
    """
    return _greedy(boxes, scores, iou_threshold, groups, None)


def box_abnormality(scores: np.ndarray, boxes: np.ndarray, stride: int) -> np.ndarray:
    """:meth:`NormalityMemory.box_abnormality`: the highest abnormality of the map ``scores [H, W]`` over the
    cells whose centres lie in each box; a box smaller than a cell reads the cell at its centre."""
    h, w = scores.shape
    if boxes.shape[0] == 0:
        return np.zeros(0, np.float32)
    ys = (np.arange(h, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
    xs = (np.arange(w, dtype=np.float32) + np.float32(0.5)) * np.float32(stride)
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    best = np.where(inside, scores[None], np.float32(-1)).max((1, 2))
    cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 / stride).astype(np.int64), 0, w - 1)
    cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 / stride).astype(np.int64), 0, h - 1)
    return np.where(inside.reshape(len(boxes), -1).any(1), best, scores[cy, cx]).astype(np.float32)


def abnormal_regions(
    scores: np.ndarray, stride: int, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`NormalityMemory.regions`: boxes ``[R, 4]`` around the 8-connected regions of the map at or
    above 1 and each region's highest abnormality, the :data:`MAX_REGIONS` most abnormal."""
    from scipy import ndimage

    labels, count = ndimage.label(scores >= 1.0, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    peaks = np.asarray(ndimage.maximum(scores, labels, np.arange(1, count + 1)), dtype=np.float32)
    h, w = image_size
    boxes = [
        (cols.start * stride, rows.start * stride, min(cols.stop * stride, w), min(rows.stop * stride, h))
        for rows, cols in ndimage.find_objects(labels)
    ]
    order = np.argsort(-peaks, kind="stable")[:MAX_REGIONS]
    return np.array([boxes[i] for i in order], dtype=np.float32).reshape(-1, 4), peaks[order]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise QuickstudyError(f"{path}: missing; this folder is not a complete export") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise QuickstudyError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise QuickstudyError(f"{path}: not a quickstudy class memory (format is not {FORMAT!r})")
    if value.get("format_version") != FORMAT_VERSION:
        raise QuickstudyError(
            f"{path}: export format version {value.get('format_version')!r}; this quickstudy reads "
            f"version {FORMAT_VERSION}: export the model again with this quickstudy"
        )
    return value


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not path.is_file():
        raise QuickstudyError(f"{path}: missing; this folder is not a complete export")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own classes for bad protobufs and unknown opsets
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise QuickstudyError(
            f"{path}: onnxruntime {ort.__version__} cannot load it ({first}); export the model again"
        ) from None
    graph = session.get_modelmeta().custom_metadata_map.get(GRAPH_KEY)
    if graph != path.name:
        raise QuickstudyError(
            f"{path}: an ONNX model, but not quickstudy's {path.name} graph (use `quickstudy export`)"
        )
    return session


class OnnxPredictor:
    """A detector read from an export folder; the same interface as the torch predictor's
    (``predict``, ``raw``, ``classes``, ``notes``), with numpy arrays where it has tensors."""

    def __init__(
        self, export_dir: str | os.PathLike[str], threads: int | None = None, batch_size: int = 16
    ) -> None:
        self.root = Path(export_dir)
        self.batch_size = batch_size
        # image -> what the last predict converted to fit the model (colour read as grey, or the reverse)
        self.notes: dict[str, str] = {}
        memory_path = self.root / MEMORY_JSON
        if not self.root.is_dir():
            raise QuickstudyError(f"{self.root}: no such export folder")
        memory = _load_json(memory_path)
        self.dense, self.embed = (_session(self.root / name, threads) for name in GRAPHS)
        self.dense_outputs = [output.name for output in self.dense.get_outputs()]
        expected = memory.get("network_sha256")
        if expected is None:
            raise QuickstudyError(
                f"{memory_path}: the class memory is of version {memory.get('model_version')} of "
                f"{memory.get('model')}, whose network is not the exported one (retrained or adapted); "
                f"export again: quickstudy export --model {memory.get('model')} --format onnx --out {self.root}"
            )
        for name in GRAPHS:
            if not isinstance(expected, dict) or expected.get(name) != file_sha256(self.root / name):
                raise QuickstudyError(
                    f"{self.root / name}: is not the network the class memory {memory_path} was made for; "
                    f"export again: quickstudy export --model {memory.get('model')} --format onnx --out {self.root}"
                )
        self._read_memory(memory, memory_path)

    def _read_memory(self, memory: dict[str, Any], where: Path) -> None:
        try:
            classes = [str(name) for name in memory["classes"]]
            thresholds = memory["thresholds"]
            self.operating = {str(k): float(v) for k, v in thresholds["operating"].items()}
            self.unknown_threshold = float(thresholds["unknown"])
            # an export made before unknown_far existed called no box unknown for distance alone
            self.unknown_far = float(thresholds.get("unknown_far", -1.0))
            unknown_operating = thresholds.get("unknown_operating")
            self.unknown_operating = None if unknown_operating is None else float(unknown_operating)
            # an export made before classes had cuts of their own: every class is cut at `unknown`
            own_cuts = {str(k): float(v) for k, v in thresholds.get("unknown_by_class", {}).items()}
            self.image_size = int(memory["input"]["image_size"])
            self.channels = int(memory["input"]["channels"])
            self.tiling = bool(memory["input"]["tiling"])
            # an export made before proposals were kept per level has neither
            self.level_locations = [int(n) for n in memory["input"].get("level_locations", [])]
            normality = memory["normality"]
            self.normality_stride = None if normality is None else int(normality["stride"])
            self.region_score_scale = 0.0 if normality is None else float(normality["region_score_scale"])
            self.region_proposals = normality is not None and bool(normality.get("region_proposals", True))
            self.settings = {key: float(value) for key, value in memory["proposals"].items()}
            # an export made before models had a learned localization head has none
            learned = [str(name) for name in memory.get("learned_classes", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise QuickstudyError(f"{where}: not a complete class memory (missing or bad {error})") from None
        locations = self.dense.get_outputs()[1].shape[1]  # boxes [B, P, 4]
        if self.level_locations and sum(self.level_locations) != locations:
            raise QuickstudyError(
                f"{where}: its level_locations {self.level_locations} do not add up to the "
                f"{locations} locations of {self.root / DENSE}"
            )
        npz = self.root / MEMORY_NPZ
        try:
            with np.load(npz, allow_pickle=False) as arrays:
                prototypes = np.asarray(arrays["prototypes"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as error:
            raise QuickstudyError(f"{npz}: not a readable class memory ({error})") from None
        dim = self.embed.get_inputs()[-1].shape[-1]
        if prototypes.ndim != 2 or prototypes.shape[0] != len(classes) or prototypes.shape[1] != dim:
            raise QuickstudyError(
                f"{npz}: prototypes of shape {prototypes.shape} for {len(classes)} classes of a "
                f"{dim}-dimensional embedding; it does not belong to {where}"
            )
        strangers = sorted(set(own_cuts) - set(classes))
        if strangers:
            raise QuickstudyError(
                f"{where}: unknown cuts for classes it does not have: {', '.join(strangers)}"
            )
        has_learned_head = set(LEARNED_DENSE) <= set(self.dense_outputs)
        if bool(learned) != has_learned_head or not set(learned) <= set(classes):
            raise QuickstudyError(
                f"{where}: learned_classes {learned} do not fit {self.root / DENSE}, which "
                f"{'has' if has_learned_head else 'has no'} learned localization head, or its classes"
            )
        # ClassMemory's ownership: a learned head's proposal names only its classes, a base one only the rest
        self.learned_owned = np.array([name in learned for name in classes])
        self._classes = classes
        self.prototypes = prototypes
        # ClassMemory.nearest: a class's own cut, where lower than the common one, raises its similarities
        self.cut_offsets = np.array(
            [
                min(own_cuts.get(name, self.unknown_threshold), self.unknown_threshold)
                - self.unknown_threshold
                for name in classes
            ],
            np.float32,
        )

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def threshold(self, name: str) -> float:
        return self.operating.get(name, DEFAULT_OPERATING)

    def _pixels(self, image: ImageInput, where: str) -> np.ndarray:
        if isinstance(image, str | os.PathLike):
            return read_image(image, colour=True)
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            array = array[..., :3]
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or array.size == 0:
            raise QuickstudyError(
                f"{where}: expected a uint8 [H, W] or [H, W, 3|4] image array, got {array.dtype} {array.shape}"
            )
        return array

    def _views(
        self, image: ImageInput, where: str
    ) -> tuple[list[tuple[np.ndarray, float, tuple[int, int]]], np.ndarray]:
        """What the network sees of one image, as the torch predictor cuts it: ``(uint8 [C, S, S], scale,
        (x0, y0))`` per view (the letterboxed whole, or each full-resolution tile), and its extent."""
        pixels, note = as_channels(self._pixels(image, where), self.channels, where)
        if note:
            self.notes[where] = note
        height, width = pixels.shape[:2]
        extent = np.array([width, height, width, height], dtype=np.float32)
        if not self.tiling:
            planes, scale = geometry.letterbox(pixels, self.image_size)
            return [(planes, scale, (0, 0))], extent
        origins = geometry.tile_origins(width, height, self.image_size)
        return [(geometry.crop(pixels, x0, y0, self.image_size), 1.0, (x0, y0)) for x0, y0 in origins], extent

    def _propose(
        self, scores: np.ndarray, boxes: np.ndarray, extra: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One view's proposals (input pixels) as :meth:`DefectDetector.propose` makes them, embedded:
        each localization head's apart, the base head's first."""
        s = self.settings
        heads = [(scores, boxes)]
        if LEARNED_DENSE[0] in extra:
            heads.append((extra[LEARNED_DENSE[0]][0], extra[LEARNED_DENSE[1]][0]))
        kept = [ranked_proposals(b, v, s, self.level_locations) for v, b in heads]
        found = np.concatenate([b[keep] for (_, b), keep in zip(heads, kept, strict=True)])
        found_scores = np.concatenate([v[keep] for (v, _), keep in zip(heads, kept, strict=True)])
        head = np.concatenate([np.full(len(keep), i, np.int64) for i, keep in enumerate(kept)])
        out: dict[str, np.ndarray] = {}
        if self.normality_stride is not None:
            abnormal = extra["abnormality"][0]
            out["abnormality"] = box_abnormality(abnormal, found, self.normality_stride)
            if self.region_proposals:
                regions, peaks = abnormal_regions(abnormal, self.normality_stride, (self.image_size,) * 2)
                out["abnormality"] = np.concatenate([out["abnormality"], peaks])
                found = np.concatenate([found, regions])
                found_scores = np.concatenate(
                    [found_scores, np.float32(self.region_score_scale) * peaks / (1 + peaks)]
                )
                head = np.concatenate([head, np.zeros(len(peaks), np.int64)])
        out.update(boxes=found, defect_scores=found_scores, head=head)
        if found.shape[0]:
            feeds = {name: value for name, value in extra.items() if name.startswith("features")}
            out["embeddings"], out["similarity"], out["probabilities"] = self.embed.run(
                None, {**feeds, "boxes": found, "prototypes": self.prototypes}
            )
        else:
            out["embeddings"] = np.zeros((0, self.prototypes.shape[1]), np.float32)
            out["similarity"] = out["probabilities"] = np.zeros((0, len(self._classes)), np.float32)
        return out

    def proposals(self, images: Sequence[ImageInput]) -> list[dict[str, np.ndarray]]:
        """Class-agnostic proposals per image: ``boxes`` in the image's pixels, ``defect_scores``,
        ``embeddings``, ``similarity`` [N, C] and ``probabilities`` [N, C] against the class memory,
        ``head`` (the localization head that proposed each: 0 base, 1 learned) and ``abnormality`` for
        a model with a normality memory; a tiling model's tiles merged by NMS, each head's apart."""
        results = []
        for start in range(0, len(images), self.batch_size):
            views: list[tuple[int, np.ndarray, float, tuple[int, int]]] = []
            extents = []
            for k, image in enumerate(images[start : start + self.batch_size]):
                where = str(image) if isinstance(image, str | os.PathLike) else f"image {start + k}"
                image_views, extent = self._views(image, where)
                views.extend((k, *view) for view in image_views)
                extents.append(extent)
            per_image: list[list[dict[str, np.ndarray]]] = [[] for _ in extents]
            for first in range(0, len(views), self.batch_size):
                chunk = views[first : first + self.batch_size]
                inputs = np.stack([planes for _, planes, _, _ in chunk]).astype(np.float32) / np.float32(255)
                outputs = dict(zip(self.dense_outputs, self.dense.run(None, {"images": inputs}), strict=True))
                for i, (k, _, scale, (x0, y0)) in enumerate(chunk):
                    extra = {name: value[i : i + 1] for name, value in outputs.items()}
                    out = self._propose(outputs["scores"][i], outputs["boxes"][i], extra)
                    offset = np.array([x0, y0, x0, y0], dtype=np.float32)
                    out["boxes"] = out["boxes"] / np.float32(scale) + offset
                    per_image[k].append(out)
            for outs, extent in zip(per_image, extents, strict=True):
                out = outs[0]
                if len(outs) > 1:  # where tiles overlap, the same defect is proposed twice
                    merged = {key: np.concatenate([o[key] for o in outs]) for key in out}
                    keep = batched_nms(
                        merged["boxes"],
                        merged["defect_scores"],
                        merged["head"],
                        self.settings["proposal_nms"],
                    )
                    out = {key: value[keep] for key, value in merged.items()}
                # a box reaching into the padding ends at the image's edge
                out["boxes"] = np.minimum(out["boxes"], extent)
                results.append(out)
        return results

    def raw(self, images: Sequence[ImageInput]) -> list[dict[str, np.ndarray]]:
        """Every (box, class) pair per image that survives per-class NMS, as the torch detector's
        ``classify`` gives it (boxes in the images' pixels)."""
        s = self.settings
        results = []
        for proposal in self.proposals(images):
            boxes, defect, similarity = proposal["boxes"], proposal["defect_scores"], proposal["similarity"]
            owned = (proposal["head"][:, None] == 1) == self.learned_owned[None, :]
            pair_scores = defect[:, None] * proposal["probabilities"] * owned
            box_index, label = np.nonzero(pair_scores > s["score_thresh"])
            pair = pair_scores[box_index, label]
            keep = batched_nms(boxes[box_index], pair, label, s["nms_thresh"])[: int(s["detections"])]
            box_index, label = box_index[keep], label[keep]
            results.append(
                {
                    "boxes": boxes[box_index],
                    "scores": pair[keep],
                    "labels": label,
                    "embeddings": proposal["embeddings"][box_index],
                    "similarity": similarity[box_index, label],
                    "max_similarity": (similarity[box_index] - self.cut_offsets).max(-1, initial=-np.inf),
                    "defect_scores": defect[box_index],
                    **(
                        {"abnormality": proposal["abnormality"][box_index]}
                        if "abnormality" in proposal
                        else {}
                    ),
                }
            )
        return results

    def predict(
        self, images: Sequence[ImageInput], score_threshold: float | None = None
    ) -> list[list[Detection]]:
        """Named detections per image, highest score first. ``score_threshold`` replaces the
        per-class operating thresholds calibrated on held-out images."""
        if isinstance(images, str | os.PathLike | np.ndarray):
            raise QuickstudyError("predict: pass a list of images, not a single image")
        self.notes = {}  # this call's conversions only: a long-running server would pile them up
        return [self.name_detections(out, score_threshold) for out in self.raw(list(images))]

    def name_detections(self, out: dict[str, np.ndarray], score_threshold: float | None) -> list[Detection]:
        """As :meth:`ClassMemory.name_detections`: a box farther than the unknown similarity from every
        prototype, and abnormal where the output carries ``abnormality``, or farther than the unknown_far
        similarity, is ``unknown`` with its defect score; each kept where it reaches its class's operating
        threshold (or ``score_threshold``), then NMS per name."""
        unknown = out["max_similarity"] < self.unknown_threshold
        if "abnormality" in out:
            unknown &= out["abnormality"] >= 1
        unknown |= out["max_similarity"] < self.unknown_far
        names = [self._classes[int(c)] for c in out["labels"]]
        thresholds = np.array(
            [score_threshold if score_threshold is not None else self.threshold(n) for n in names],
            dtype=np.float32,
        )
        unknown_cut = score_threshold
        if unknown_cut is None:
            least = min(self.operating.values(), default=DEFAULT_OPERATING)
            unknown_cut = least if self.unknown_operating is None else self.unknown_operating
        scores = np.where(unknown, out["defect_scores"], out["scores"])
        keep = np.where(unknown, scores >= unknown_cut, scores >= thresholds)
        group = np.where(unknown, -1, out["labels"])
        index = np.flatnonzero(keep)
        index = index[batched_nms(out["boxes"][index], scores[index], group[index], NAMING_NMS)]
        return [
            Detection(
                tuple(float(v) for v in out["boxes"][i]),  # type: ignore[arg-type]
                UNKNOWN if unknown[i] else names[i],
                float(scores[i]),
                float(out["max_similarity"][i] if unknown[i] else out["similarity"][i]),
            )
            for i in index.tolist()
        ]
