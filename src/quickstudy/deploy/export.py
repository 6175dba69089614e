"""Export a detector version to an ONNX folder (see :mod:`quickstudy.deploy`), check it against the
torch detector, and keep its class memory in step with the model folder it came from.

>>> export_onnx("runs/neu", "deploy/neu")  # doctest: +SKIP
PosixPath('deploy/neu')

The model folder lists its exports in ``exports.json``; :func:`refresh_exports` rewrites their class
memory from the model's current version, so a class ``learn`` adds reaches a deployed model without a
new export. A version whose network differs from the exported one gets a class memory that the
runtime refuses, saying to export again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quickstudy import __version__
from quickstudy.deploy.runtime import (
    DENSE,
    EMBED,
    FORMAT,
    FORMAT_VERSION,
    GRAPH_KEY,
    GRAPHS,
    LEARNED_DENSE,
    MEMORY_JSON,
    MEMORY_NPZ,
    OnnxPredictor,
    file_sha256,
    is_export,
)
from quickstudy.detect.model import NORMALITY_SCALE, DefectDetector, detector_from_payload
from quickstudy.detect.recognition import bin_weights
from quickstudy.detect.versions import ModelFolder
from quickstudy.errors import QuickstudyError

OPSET = 17
REGISTRY = "exports.json"
# the graphs must give the torch network's numbers up to float rounding (checked at export)
EXPORT_TOLERANCE = {
    "boxes": 1e-2,
    "defect_scores": 1e-4,
    "embeddings": 1e-4,
    "abnormality": 1e-3,
    "head": 0,
}


def map_sizes(model: DefectDetector) -> list[tuple[int, int]]:
    """(h, w) of each FPN map for one input of the network's size (every view is letterboxed or
    cropped to it)."""
    size = model.config.image_size
    with torch.no_grad():
        features = model.features(torch.zeros(1, model.config.channels, size, size, device=model.device))
    return [(f.shape[-2], f.shape[-1]) for f in features]


class DenseGraph(nn.Module):
    """Images → ``scores [B, P]``, ``boxes [B, P, 4]`` (input pixels, clamped to the image), the FPN maps,
    with a learned localization head its ``learned_scores`` and ``learned_boxes``, and with a normality
    memory the abnormality map ``[B, H, W]``: what :meth:`DefectDetector.propose` computes before its
    per-image top-k, NMS and abnormal regions."""

    def __init__(self, model: DefectDetector) -> None:
        super().__init__()
        self.model = model
        self.points: torch.Tensor
        self.register_buffer(
            "points", model.localize.points(map_sizes(model), model.device), persistent=False
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.features(images)
        size = float(self.model.config.image_size)
        heads = []
        for dense in self.model.proposing_heads(features, self.model.localize(features)):
            scores = torch.sqrt(dense["logits"].float().sigmoid() * dense["centerness"].float().sigmoid())
            boxes = self.model.localize.decode(self.points, dense["distances"].float())
            heads.append((scores, boxes.clamp(0, size)))
        (scores, boxes), *learned = heads
        normality = self.model.normality
        abnormality = () if normality is None else (normality.score_map(features),)
        return scores, boxes, *features, *(t for head in learned for t in head), *abnormality


class EmbedGraph(nn.Module):
    """One image's FPN maps, its boxes ``[K, 4]`` and the prototypes ``[C, D]`` → unit embeddings
    ``[K, D]``, cosine similarities ``[K, C]`` and p(class | box) ``[K, C]`` (the recognition head's
    scaled-cosine softmax): the class memory is an input, so a new class needs no new graph.

    The pooling is :func:`~quickstudy.detect.recognition.pyramid_roi_align`'s sum over levels taken
    level by level: the same two products per level, without the block-diagonal grid of all levels,
    which ONNX builds by ScatterND (the grid took ~40 % of this graph's time, its products ~2.4x the
    multiplications of the per-level ones). The products leave the pooled bins as (row, channel,
    column); the MLP's first layer takes them in that order (its weight's columns permuted once
    here) rather than transposing every box's bins."""

    def __init__(self, model: DefectDetector, sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.model = model
        self.sizes = sizes
        flatten, first, *rest = model.recognize.mlp
        if not isinstance(flatten, nn.Flatten) or not isinstance(first, nn.Linear):
            raise QuickstudyError(
                "the recognition head's MLP does not start Flatten, Linear; cannot export it"
            )
        size, channels = model.recognize.pool_size, model.config.fpn_channels
        weight = (
            first.weight.detach().view(-1, channels, size, size).transpose(1, 2).reshape(first.weight.shape)
        )
        self.first = nn.Linear(first.in_features, first.out_features).to(weight.device)
        self.first.weight.data.copy_(weight)
        self.first.bias.data.copy_(first.bias.detach())
        self.rest = nn.Sequential(*rest)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *features, boxes, prototypes = inputs
        recognize = self.model.recognize
        size = recognize.pool_size
        heights, widths = [h for h, _ in self.sizes], [w for _, w in self.sizes]
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
        weights = bin_weights(rois, heights, widths, recognize.strides, size, sampling_ratio=2)
        count, channels = boxes.shape[0], features[0].shape[1]
        levels = []
        top = left = 0
        for feature, height, width in zip(features, heights, widths, strict=True):
            rows = weights[0, :, :, top : top + height].reshape(count * size, height)
            columns = weights[1, :, :, left : left + width]
            grid = feature[0].transpose(0, 1).reshape(height, channels * width)
            by_rows = (rows @ grid).view(count, size * channels, width)
            levels.append(by_rows @ columns.transpose(1, 2))
            top, left = top + height, left + width
        pooled = sum(levels[1:], levels[0]).reshape(count, -1)
        embeddings = F.normalize(self.rest(self.first(pooled)), dim=-1)
        similarity = embeddings @ prototypes.T
        probabilities = (recognize.log_scale.exp() * similarity).softmax(-1)
        return embeddings, similarity, probabilities


def weights_sha256(model: DefectDetector) -> str:
    """The hash of what the exported graphs compute with: the network's weights (not the class
    memory, not the training-only class vectors), its input geometry and its normality memory."""
    digest = hashlib.sha256()
    cfg = model.config
    digest.update(json.dumps([cfg.image_size, cfg.channels, cfg.tiling]).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name == "class_vectors":
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if model.normality is not None:
        digest.update(
            json.dumps([model.normality.threshold, model.normality.level, model.normality.stride]).encode()
        )
        digest.update(model.normality.vectors.numpy().tobytes())
    return digest.hexdigest()


def merge_sibling_convs(model: Any) -> int:
    """Make the convolutions that read the same tensor with the same geometry and constant weights one
    convolution (their filters stacked) and a Split; return how many were merged. onnxruntime pads a
    convolution's outputs to a block of 8-16 channels: the localizer's score, box and centre-ness
    convs (1, 4 and 1 channels, on each level) cost about as much each as all three together."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    siblings: dict[tuple[str, str], list[Any]] = {}
    for node in graph.node:
        if (
            node.op_type == "Conv"
            and len(node.input) == 3
            and all(name in constants for name in node.input[1:])
        ):
            geometry = str(sorted((a.name, str(helper.get_attribute_value(a))) for a in node.attribute))
            siblings.setdefault((node.input[0], geometry), []).append(node)
    merged = 0
    for (source, _), nodes in siblings.items():
        if len(nodes) < 2:
            continue
        name = f"{nodes[0].name or nodes[0].output[0]}_merged"
        weights = [numpy_helper.to_array(constants[node.input[1]]) for node in nodes]
        biases = [numpy_helper.to_array(constants[node.input[2]]) for node in nodes]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(weights), f"{name}.weight"),
                numpy_helper.from_array(np.concatenate(biases), f"{name}.bias"),
                numpy_helper.from_array(np.array([w.shape[0] for w in weights], np.int64), f"{name}.split"),
            ]
        )
        conv = helper.make_node("Conv", [source, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name)
        conv.attribute.extend(nodes[0].attribute)
        split = helper.make_node(
            "Split",
            [f"{name}.out", f"{name}.split"],
            [node.output[0] for node in nodes],
            f"{name}.split",
            axis=1,
        )
        # in the first sibling's place: every sibling's consumers come after it
        position = list(graph.node).index(nodes[0])
        for node in nodes:
            graph.node.remove(node)
        graph.node.insert(position, split)
        graph.node.insert(position, conv)
        merged += len(nodes)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return merged


def _export_graphs(model: DefectDetector, out: Path) -> None:
    import onnx

    cfg = model.config
    images = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size, device=model.device)
    dense = DenseGraph(model).eval()
    levels = len(model.backbone.map_strides)
    feature_names = [f"features{level}" for level in range(levels)]
    dense_outputs = [
        "scores",
        "boxes",
        *feature_names,
        *(LEARNED_DENSE if model.learned_localize is not None else []),
        *(["abnormality"] if model.normality is not None else []),
    ]
    with torch.no_grad():
        features = dense(images)[2 : 2 + levels]
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 30.0, 12.0]], device=model.device)
    prototypes = model.memory.prototypes.to(model.device)
    graphs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict]] = [
        (
            DENSE,
            dense,
            (images,),
            ["images"],
            dense_outputs,
            {name: {0: "batch"} for name in ["images", *dense_outputs]},
        ),
        (
            EMBED,
            EmbedGraph(model, [(f.shape[-2], f.shape[-1]) for f in features]).eval(),
            (*(f[:1] for f in features), boxes, prototypes),
            [*feature_names, "boxes", "prototypes"],
            ["embeddings", "similarity", "probabilities"],
            {
                "boxes": {0: "boxes"},
                "prototypes": {0: "classes"},
                "embeddings": {0: "boxes"},
                "similarity": {0: "boxes", 1: "classes"},
                "probabilities": {0: "boxes", 1: "classes"},
            },
        ),
    ]
    for name, module, args, inputs, outputs, axes in graphs:
        path = out / name
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer's notes on Python numbers: the input size is fixed, so they are constants
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # the TorchScript exporter: the dynamo one needs onnxscript, which quickstudy does not install
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        graph = onnx.load(str(path))
        merge_sibling_convs(graph)
        onnx.helper.set_model_props(graph, {GRAPH_KEY: name, "quickstudy_version": __version__})
        onnx.save(graph, str(path))


def _memory_record(
    model: DefectDetector, payload: dict[str, Any], model_dir: Path, network: dict[str, str] | None
) -> tuple[dict[str, Any], np.ndarray]:
    memory, cfg = model.memory, model.config
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quickstudy_version": __version__,
        "model": str(model_dir),
        "model_version": payload.get("version"),
        "taxonomy_version": payload.get("taxonomy_version"),
        "classes": memory.classes,
        "learned_classes": list(model.learned_classes),
        "thresholds": {
            "unknown": memory.unknown,
            "unknown_far": memory.unknown_far,
            "unknown_operating": memory.unknown_operating,
            "unknown_by_class": dict(memory.unknown_by_class),
            "operating": dict(memory.operating),
        },
        "input": {
            "image_size": cfg.image_size,
            "channels": cfg.channels,
            "tiling": cfg.tiling,
            "level_locations": model.localize.level_sizes(map_sizes(model)),
        },
        "proposals": {
            key: getattr(cfg, key)
            for key in (
                "score_thresh",
                "candidates",
                "proposal_nms",
                "proposals",
                "proposals_per_level",
                "nms_thresh",
                "detections",
            )
        },
        "normality": (
            None
            if model.normality is None
            else {
                "stride": model.normality.stride,
                "region_score_scale": NORMALITY_SCALE,
                "region_proposals": cfg.normality_proposals,
            }
        ),
        "weights_sha256": weights_sha256(model),
        "network_sha256": network,
    }
    return record, memory.prototypes.numpy().astype(np.float32)


def _write_memory(out: Path, record: dict[str, Any], prototypes: np.ndarray) -> None:
    """Write the class memory atomically: the npz first, then the JSON that names the network."""
    for name, write in (
        (MEMORY_NPZ, lambda f: np.savez(f, prototypes=prototypes)),
        (MEMORY_JSON, lambda f: f.write(json.dumps(record, indent=2).encode())),
    ):
        with tempfile.NamedTemporaryFile(dir=out, prefix=f".{name}.", delete=False) as handle:
            write(handle)
        os.replace(handle.name, out / name)


def _check_parity(model: DefectDetector, out: Path) -> None:
    """The export's dense outputs and embeddings against the torch network's on a probe image."""
    from quickstudy.detect.predictor import Predictor

    cfg = model.config
    rng = np.random.default_rng(0)
    shape = (cfg.image_size, cfg.image_size, 3) if cfg.channels == 3 else (cfg.image_size, cfg.image_size)
    probe = rng.integers(0, 256, shape, dtype=np.uint8)
    runtime = OnnxPredictor(out).proposals([probe])[0]
    torch_out = Predictor(model).proposals([probe])[0]
    for key, tolerance in EXPORT_TOLERANCE.items():
        if key not in torch_out and key not in runtime:
            continue
        theirs = torch_out[key].numpy()
        ours = runtime[key]
        if ours.shape != theirs.shape or (ours.size and np.abs(ours - theirs).max() > tolerance):
            raise QuickstudyError(
                f"{out}: the exported network does not reproduce the torch detector's {key} "
                "on a probe image; not exported"
            )


def export_onnx(
    model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], version: int | None = None
) -> Path:
    """Export version ``version`` (default: current) of the model folder ``model_dir`` to ``out_dir``
    (created; an earlier export there is replaced), check it, and register it in the model folder."""
    if is_export(model_dir):
        source = json.loads((Path(model_dir) / MEMORY_JSON).read_text()).get("model")
        raise QuickstudyError(f"{model_dir}: is an export; export from its model folder ({source})")
    folder = ModelFolder(model_dir)
    number = folder.current() if version is None else version
    if number not in folder.numbers():
        raise QuickstudyError(f"{model_dir}: no version {number} (have {folder.numbers() or 'none'})")
    payload = folder.load(number)
    model = detector_from_payload(payload, "cpu", folder.path(number))
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MEMORY_JSON).is_file())):
        raise QuickstudyError(f"{out}: exists and is not an export folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        _export_graphs(model, staging)
        network = {name: file_sha256(staging / name) for name in GRAPHS}
        _write_memory(staging, *_memory_record(model, payload, folder.root.resolve(), network))
        _check_parity(model, staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _register(folder.root, out.resolve(), weights_sha256(model), network)
    return out


def _registry(root: Path) -> list[dict[str, Any]]:
    path = root / REGISTRY
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuickstudyError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise QuickstudyError(f"{path}: not a list of exports")
    return entries


def _register(root: Path, out: Path, weights: str, network: dict[str, str]) -> None:
    entries = [e for e in _registry(root) if e["path"] != str(out)]
    entries.append({"path": str(out), "weights_sha256": weights, "network_sha256": network})
    tmp = root / f".{REGISTRY}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(entries, indent=2))
    os.replace(tmp, root / REGISTRY)


def _source(export: Path) -> str | None:
    """The model folder an export's class memory says it came from (None when unreadable)."""
    try:
        source = json.loads((export / MEMORY_JSON).read_text()).get("model")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return source if isinstance(source, str) else None


def refresh_exports(model_dir: str | os.PathLike[str]) -> list[Path]:
    """Rewrite the class memory of every export of ``model_dir`` from its current version; return the
    export folders rewritten. An export whose network differs from the current version's gets a memory
    the runtime refuses (export again); an export folder that no longer exists, or that another model
    folder wrote (this folder is a copy, its ``exports.json`` copied with it), is skipped."""
    folder = ModelFolder(model_dir)
    entries = [
        e
        for e in _registry(folder.root)
        if (Path(e["path"]) / MEMORY_JSON).is_file()
        and _source(Path(e["path"])) == str(folder.root.resolve())
    ]
    if not entries:
        return []
    number = folder.current()
    payload = folder.load(number)
    model = detector_from_payload(payload, "cpu", folder.path(number))
    weights = weights_sha256(model)
    written = []
    for entry in entries:
        out = Path(entry["path"])
        network = entry.get("network_sha256") if entry.get("weights_sha256") == weights else None
        _write_memory(out, *_memory_record(model, payload, folder.root.resolve(), network))
        written.append(out)
    return written
