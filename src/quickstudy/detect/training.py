"""Training glue for the detector: store → in-memory set → :class:`quickstudy.train.Trainer` →
class memory and thresholds calibrated on held-out images → version 1 of a model folder.

>>> version = train_detector(store, "runs/neu", epochs=24, device="cuda")  # doctest: +SKIP
>>> train_detector(store, "runs/neu-ssl", init="runs/pretrain-small")  # doctest: +SKIP

``init`` starts the backbone (ResNet + FPN) from a self-supervised pretraining run
(``quickstudy pretrain --backbone detector --arch A``); the heads start from scratch.

Held out for calibration (never trained on): on NEU-DET the TRAIN images ``<class>_<n>`` with
n % 5 == 1 (protocol P1's model selection set), elsewhere every fifth training image. From them
come the "unknown" similarity threshold and each class's image-level operating threshold.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import chi2
from torch import nn

from quickstudy.data.images import carries_colour, read_image
from quickstudy.detect.data import (
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    DEFAULT_PHOTOMETRIC,
    DEFAULT_SQUEEZE,
    DEFAULT_SYNTHETIC_DEFECTS,
    DecodedImages,
    DetectionSet,
)
from quickstudy.detect.loading import StepIndices, StepLoader
from quickstudy.detect.memory import (
    ClassMemory,
    Detection,
    class_means,
    just_above,
    unknown_cuts,
    unknown_similarity,
)
from quickstudy.detect.model import DefectDetector, DetectorConfig, detector_payload
from quickstudy.detect.normality import (
    MEMORY_SIZE,
    NORMALITY_LEVEL,
    NormalityMemory,
    greedy_coreset,
    normal_cells,
    normal_threshold,
)
from quickstudy.detect.versions import ModelFolder, store_fingerprint
from quickstudy.errors import QuickstudyError
from quickstudy.evaluate.detection import image_scores
from quickstudy.evaluate.matching import on_clean_background
from quickstudy.multitask.weighting import get_weighting
from quickstudy.train import Trainer, distributed, step_generator

# The recipe measurement chose on P2 (BENCHMARKS.md, detector rows): equal weighting of the two
# losses trained better than uncertainty weighting, which once collapsed; batch 8 at lr 1e-3 is the
# recipe the defaults' seeds were measured with.
DEFAULT_WEIGHTING = "equal"
DEFAULT_BATCH_SIZE = 8
DEFAULT_LR = 1e-3
# calibration raises the score an ``unknown`` detection needs until no more than this many per image lie
# on clean background (the goal for a new type's false alarms), with this confidence: the rate's
# upper bound from the held-out images must meet it, as a rate that only just meets it there exceeds it
# on new images about half the time
UNKNOWN_BACKGROUND_PER_IMAGE = 0.1
UNKNOWN_BACKGROUND_CONFIDENCE = 0.9


def select_samples(samples: Sequence[Any], classes: Sequence[str] | None, limit: int | None) -> list[Any]:
    """Keep images all of whose boxes' allowed sets lie within ``classes`` (``--classes``), then the
    first ``limit`` (``--limit``)."""
    kept = list(samples)
    if classes is not None:
        wanted = set(classes)
        kept = [s for s in kept if all(box.allowed <= wanted for box in s.boxes)]
    return kept[:limit] if limit else kept


def colour_channels(samples: Sequence[Any], probe: int = 64) -> int:
    """3 when any of ``probe`` images spread over ``samples`` carries colour (its channels differ: a grey
    picture saved as RGB, as NEU-DET's are, stays grey), else 1."""
    step = max(1, len(samples) // probe)
    picked = list(samples)[::step][:probe]
    return 3 if any(carries_colour(read_image(s.path, colour=True)) for s in picked) else 1


def input_size_for(samples: Sequence[Any]) -> int:
    """The default input size: the training images' median long side, a multiple of 8 within 96..640
    (NEU-DET: 200, as every P2 number was measured; magnetic tile: about 330)."""
    sides = sorted(max(s.width, s.height) for s in samples) or [200]
    median = sides[len(sides) // 2]
    return int(min(640, max(96, 8 * round(median / 8))))


# Tile when the median box, letterboxed with its frame, would be under this (px): tiles won at 9 px in
# both seeds, lost at 15 in both, split at 12, where they cost 7x the inference (benchmarks/tile_threshold.py).
TILE_BELOW = 10.0


def needs_tiling(samples: Sequence[Any], image_size: int) -> bool:
    """Whether small defects in large frames call for tiles: the median box side (sqrt(w·h)), scaled as
    its frame is letterboxed to ``image_size``, under :data:`TILE_BELOW`. Frames no larger than the
    input never tile."""
    sides = sorted(
        ((b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1])) ** 0.5
        * min(1.0, image_size / max(s.width, s.height))
        for s in samples
        for b in s.boxes
    )
    return bool(sides) and sides[len(sides) // 2] < TILE_BELOW


def split_validation(samples: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(train, validation) as described in the module docstring; under 10 images nothing is held
    out and the training images double as validation (the same list, so they are read once)."""
    from quickstudy.labels.known import is_neu_validation

    if len(samples) < 10:
        both = list(samples)
        return both, both
    try:
        held = [is_neu_validation(s.path) for s in samples]
    except QuickstudyError:  # not NEU-DET names
        held = [i % 5 == 1 for i in range(len(samples))]
    train = [s for s, h in zip(samples, held, strict=True) if not h]
    validation = [s for s, h in zip(samples, held, strict=True) if h]
    return train, validation or train


@torch.no_grad()
def detect(
    model: DefectDetector, images: torch.Tensor | DecodedImages, batch_size: int = 64
) -> list[dict[str, torch.Tensor]]:
    """Run the model over ``uint8 [N, C, S, S]`` images in batches; results on the CPU."""
    model.eval()
    device = model.device
    results = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device).float() / 255
        for out in model(batch):
            results.append({k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()})
    return results


@torch.no_grad()
def box_embeddings(model: DefectDetector, data: DetectionSet, batch_size: int = 64) -> torch.Tensor:
    """Embeddings ``[K, D]`` of every valid box of ``data`` (in ``data.valid`` order), unaugmented."""
    model.eval()
    device = model.device
    chunks = []
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device).float() / 255
        valid = data.valid[start : start + batch_size]
        boxes = [b[v].to(device) for b, v in zip(data.boxes[start : start + batch_size], valid, strict=True)]
        chunks.append(model.embed_boxes(images, boxes).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.config.embedding_dim)


@torch.no_grad()
def normality_maps(
    model: DefectDetector, data: DetectionSet, level: int, batch_size: int = 32
) -> list[torch.Tensor]:
    """Per image of ``data``, the features ``[H, W, C]`` of FPN level ``level`` (CPU), unaugmented."""
    model.eval()
    maps: list[torch.Tensor] = []
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(model.device).float() / 255
        maps.extend(model.features(images)[level].float().permute(0, 2, 3, 1).cpu())
    return maps


def normal_patches(maps: Sequence[torch.Tensor], data: DetectionSet, stride: int) -> list[torch.Tensor]:
    """Per image, its unit feature vectors ``[n, C]`` at the locations away from every valid box."""
    patches = []
    for i, features in enumerate(maps):
        normal = normal_cells(data.boxes[i][data.valid[i]].cpu(), features.shape[:2], stride)
        patches.append(F.normalize(features[normal], dim=-1))
    return patches


def normality_memory(patches: Sequence[torch.Tensor], size: int = MEMORY_SIZE, seed: int = 0) -> torch.Tensor:
    """The memory's rows from per-image normal patches: up to ``8 · size`` sampled evenly over the images,
    then :func:`~quickstudy.detect.normality.greedy_coreset` to ``size``."""
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, -(-8 * size // max(1, len(patches))))
    pool = torch.cat(
        [p[torch.randperm(p.shape[0], generator=generator)[:per_image]] for p in patches if p.shape[0]]
    )
    return pool[greedy_coreset(pool, size)]


def fit_normality(
    model: DefectDetector, fitted: DetectionSet, validation: DetectionSet, size: int = MEMORY_SIZE
) -> NormalityMemory | None:
    """The normality memory of a trained model (FPN level :data:`NORMALITY_LEVEL`): normal patches of ``fitted``, the
    threshold from ``validation``'s normal regions (:func:`~quickstudy.detect.normality.normal_threshold`).
    Where the two are the same images, the threshold is measured on every other image against a memory
    of the rest. None when no image has a normal location. Also sets ``model.normality``."""
    level = NORMALITY_LEVEL
    stride = model.backbone.strides[level]
    fitted_patches = normal_patches(normality_maps(model, fitted, level), fitted, stride)
    if validation is fitted:
        memory_rows = normality_memory(fitted_patches[0::2] or fitted_patches, size)
        held = fitted_patches[1::2] or fitted_patches
    else:
        memory_rows = normality_memory(fitted_patches, size)
        held = normal_patches(normality_maps(model, validation, level), validation, stride)
    held = [p for p in held if p.shape[0]]
    if not held or not memory_rows.shape[0]:
        model.normality = None
        return None
    maxima = torch.stack([(2 - 2 * (p @ memory_rows.T).amax(-1)).clamp(min=0).sqrt().max() for p in held])
    rows = normality_memory(fitted_patches, size) if validation is fitted else memory_rows
    model.normality = NormalityMemory(rows, max(normal_threshold(maxima), 1e-3), level, stride)
    return model.normality


@torch.no_grad()
def box_abnormality(model: DefectDetector, data: DetectionSet, batch_size: int = 32) -> torch.Tensor:
    """The abnormality ``[K]`` of every valid box of ``data`` (in ``data.valid`` order)."""
    normality = model.normality
    assert normality is not None
    model.eval()
    values = []
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(model.device).float() / 255
        maps = normality.score_map(model.features(images)).cpu()
        for i, scores in enumerate(maps):
            index = start + i
            values.append(normality.box_abnormality(scores, data.boxes[index][data.valid[index]].cpu()))
    return torch.cat(values) if values else torch.zeros(0)


def calibrate(model: DefectDetector, fitted: DetectionSet, validation: DetectionSet) -> ClassMemory:
    """The class memory of a trained model: each class's prototype the mean embedding of its boxes
    in ``fitted`` (:func:`~quickstudy.detect.memory.class_means`), thresholds fitted on ``validation``.
    Also sets ``model.memory``.

    ``unknown`` and ``unknown_far``: with a normality memory,
    :func:`~quickstudy.detect.memory.unknown_cuts` of held-out boxes' similarity to their nearest
    prototype and their abnormality (at most 5% of them called unknown; held-out boxes of a type
    retired as unnamed choose how); without, :func:`~quickstudy.detect.memory.unknown_similarity` of
    their similarity to their own class's prototype. ``operating[c]``: the image-level score threshold
    with the best F1 for "the image holds a box of class c" on the held-out images; likewise for
    ``unknown`` detections where held-out images hold known unknowns, and raised until few ``unknown``
    detections land on clean surface (:func:`unknown_operating`).
    """
    fitted_allowed = fitted.allowed[fitted.valid].cpu()
    means = class_means(box_embeddings(model, fitted), fitted_allowed, model.class_vectors.detach().cpu())
    model.memory = ClassMemory(model.classes, means)
    embeddings = box_embeddings(model, validation)
    allowed = validation.allowed[validation.valid]
    single = allowed.sum(-1) == 1
    similarity = model.memory.similarity(embeddings[single])
    unknown_far = -1.0
    if model.normality is not None:
        abnormal = box_abnormality(model, validation) >= 1
        unnamed = validation.unnamed[validation.valid].to(abnormal.device)
        unknown, unknown_far = unknown_cuts(
            similarity.amax(-1),
            abnormal[single],
            model.memory.similarity(embeddings[unnamed]).amax(-1),
            abnormal[unnamed],
        )
    else:
        unknown = unknown_similarity(similarity[allowed[single]])
    outputs = detect(model, validation.images)
    present = (validation.allowed & validation.valid[..., None]).any(1)  # [N, C]
    model.memory = model.memory.with_thresholds(
        operating_thresholds(outputs, present, model.classes), unknown, unknown_far
    )
    holds_unnamed = (validation.unnamed & validation.valid).any(1)
    true_boxes = [boxes[valid] for boxes, valid in zip(validation.boxes, validation.valid, strict=True)]
    model.memory = model.memory.with_thresholds(
        unknown_operating=unknown_operating(model.memory, outputs, holds_unnamed, true_boxes)
    )
    return model.memory


def operating_thresholds(
    outputs: Sequence[dict[str, torch.Tensor]], present: torch.Tensor, classes: Sequence[str]
) -> dict[str, float]:
    """Per class, the score threshold that maximises image-level F1 (0.5 for a class never seen)."""
    scores = image_scores(outputs, len(classes))
    return {
        name: best_f1_threshold(scores[:, c], present[:, c]) if present[:, c].any() else 0.5
        for c, name in enumerate(classes)
    }


def best_f1_threshold(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """The image score threshold ``scores [N]`` with the best F1 for ``positives [N]`` (at least 1e-3).

    >>> best_f1_threshold(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([True, True, False, False]))
    0.800000011920929
    """
    candidates = scores.unique()
    predicted = scores[None, :] >= candidates[:, None]  # [T, N]
    tp = (predicted & positives).sum(1).float()
    f1 = 2 * tp / (predicted.sum(1) + positives.sum()).float()
    return float(candidates[f1.argmax()].clamp(min=1e-3))


def clean_surface_unknowns(
    unknowns: Sequence[Sequence[Detection]], true_boxes: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The scores of the ``unknown`` detections of each image (``unknowns``, at any score:
    :meth:`~quickstudy.detect.memory.ClassMemory.unknown_detections`) that lie on clean surface
    (:func:`~quickstudy.evaluate.matching.on_clean_background` of its image's ``true_boxes``): at a
    threshold t, those at or above t are the false ``unknown`` alarms a person would be shown."""
    scores = [torch.zeros(0)]
    for found, truth in zip(unknowns, true_boxes, strict=True):
        clean = on_clean_background(torch.tensor([d.box for d in found]).reshape(-1, 4), truth.cpu())
        scores.append(torch.tensor([d.score for d in found])[clean])
    return torch.cat(scores)


def alarms_allowed(
    images: int,
    rate: float = UNKNOWN_BACKGROUND_PER_IMAGE,
    confidence: float = UNKNOWN_BACKGROUND_CONFIDENCE,
) -> int:
    """The most clean-surface ``unknown`` alarms ``images`` held-out images may show while the one-sided
    ``confidence`` upper bound of their rate per image (exact Poisson: half the chi-square quantile on
    2k + 2 degrees of freedom) stays within ``rate``; 0 when even none would not bound it (too few images).

    >>> alarms_allowed(300), alarms_allowed(60), alarms_allowed(10)
    (22, 2, 0)
    """
    expected = rate * images
    k = int(expected)
    while k > 0 and chi2.ppf(confidence, 2 * k + 2) / 2 > expected:
        k -= 1
    return k


def unknown_operating(
    memory: ClassMemory,
    outputs: Sequence[dict[str, torch.Tensor]],
    holds_unnamed: torch.Tensor,
    true_boxes: Sequence[torch.Tensor],
) -> float | None:
    """The score an ``unknown`` detection needs, from held-out images (``outputs``, their valid
    ``true_boxes``). Where some hold boxes of a type retired as unnamed (``holds_unnamed [N]``): the
    image-level threshold with the best F1 for "the image holds one", as each class's operating
    threshold is set; else the least demanding class's (None). Raised, either way, until at most
    :data:`UNKNOWN_BACKGROUND_PER_IMAGE` ``unknown`` detections per image lie on clean surface
    (:func:`clean_surface_unknowns`), bounded as :func:`alarms_allowed` says: a person asked to look at
    every ``unknown`` stops looking when most are nothing."""
    unknowns = [memory.unknown_detections(out) for out in outputs]
    chosen = None
    if holds_unnamed.any():
        best = [max((d.score for d in found), default=0.0) for found in unknowns]
        chosen = best_f1_threshold(torch.tensor(best), holds_unnamed.cpu())
    alarms = clean_surface_unknowns(unknowns, true_boxes)
    allowed = alarms_allowed(len(outputs))
    if len(alarms) <= allowed:
        return chosen
    # the lowest score that leaves at most `allowed` of them
    budget = just_above(float(alarms.sort(descending=True).values[allowed]))
    current = memory.unknown_score if chosen is None else chosen
    return chosen if budget <= current else budget


def load_pretrained_backbone(model: DefectDetector, init: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy a detector pretraining run's weights into ``model.backbone``; return what was loaded.

    Every tensor must match by name and shape. Raises :class:`QuickstudyError` naming the file when
    it is missing, corrupt, not a finished pretraining run, or pretrains another network.
    """
    from quickstudy.backbones import load_backbone_weights
    from quickstudy.pretrain import load_pretrained

    pretrained = load_pretrained(init)
    config = model.config
    wanted = {"widths": config.widths, "depths": config.depths, "fpn_channels": config.fpn_channels}
    if pretrained.backbone_name != "detector":
        raise QuickstudyError(
            f"{pretrained.file}: pretrains a {pretrained.backbone_name!r} backbone, not the detector's; "
            "make one with `quickstudy pretrain --backbone detector --arch ...`"
        )
    recorded = pretrained.backbone_kwargs
    got = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in wanted}
    if got != wanted:
        raise QuickstudyError(
            f"{pretrained.file}: pretrains the detector network {pretrained.arch or ''} {got}, "
            f"but this detector's is {wanted}; pretrain with the same --arch"
        )
    state = pretrained.backbone.state_dict()
    if model.backbone.fine is not None:  # pretraining has no fine map: its lateral starts at zero
        state = {**state, "fine.weight": model.backbone.fine.weight.detach().clone()}
    load_backbone_weights(model.backbone, state, backbone_name="detector")
    return {
        "path": str(pretrained.file.resolve()),
        "method": pretrained.method,
        "steps": pretrained.steps,
        "arch": pretrained.arch,
        "image_size": pretrained.image_size,
    }


def train_detector(
    store: Any,
    out_dir: str | os.PathLike[str],
    *,
    epochs: int = 24,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    device: str = "cpu",
    weighting: str = DEFAULT_WEIGHTING,
    config: DetectorConfig | None = None,
    weights: str | None = None,
    seed: int = 0,
    samples: Sequence[Any] | None = None,
    init: str | os.PathLike[str] | None = None,
    hold_out: bool = True,
    augment: str = DEFAULT_AUGMENT,
    photometric: bool = DEFAULT_PHOTOMETRIC,
    channels: int | None = None,
    image_size: int | str | None = None,
    amp: bool = True,
    tiling: str = "auto",
    workers: int = 0,
    synthetic_defects: float = DEFAULT_SYNTHETIC_DEFECTS,
    squeeze: float = DEFAULT_SQUEEZE,
) -> int:
    """Train on the store's train split and write version 1 of the model folder ``out_dir``.

    Only checked images train (an image nobody has looked at may hold defects no box marks, which
    the localizer would learn as background). ``channels`` 1 or 3 sets the network's input; None
    takes 3 when the training images carry colour (:func:`colour_channels`). ``image_size`` is the
    input's long side: a number, ``"auto"`` (:func:`input_size_for` the training images) or None
    (``config``'s). ``amp``: bfloat16 autocast on CUDA. ``tiling`` ``"on"``, ``"off"`` or ``"auto"``
    (:func:`needs_tiling`).

    ``samples`` replaces ``store.samples("train")`` (benchmarks that edit labels in memory);
    ``classes`` restricts the taxonomy as ``--classes`` does; ``init`` is a pretraining run
    (:func:`load_pretrained_backbone`) the backbone starts from, recorded in the version's
    ``train["init"]`` (None: random or ``weights`` init). ``hold_out=False`` fits every image and
    calibrates on the fitted images (optimistic thresholds; for comparisons with detectors that
    fit the whole split). ``augment`` names the geometric augmentation (``data.AUGMENTATIONS``);
    ``photometric`` adds brightness and contrast changes. ``workers``: DataLoader processes decoding
    the batches ahead (:class:`~quickstudy.detect.loading.StepLoader`; the batches are the same with
    any number); how the run is computed, not a property of the model, so not recorded in it.
    ``synthetic_defects``: the share of training images given a synthetic defect of no named type
    (:func:`~quickstudy.detect.data.paste_synthetic_defects`). ``squeeze``: the share of training images
    squeezed along one axis (:func:`~quickstudy.detect.data.squeeze_images`).
    Returns the version number written.
    """
    if augment not in AUGMENTATIONS:
        raise QuickstudyError(f"augment {augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if ModelFolder(out_dir).numbers():
        raise QuickstudyError(
            f"{out_dir}: already holds a trained model (see `quickstudy models list`); choose another --out"
        )
    if init is not None and weights is not None:
        raise QuickstudyError("give either --init (a pretraining run) or --weights (torchvision), not both")
    all_classes = list(store.classes())
    if classes is not None:
        unknown = [c for c in classes if c not in all_classes]
        if unknown:
            raise QuickstudyError(f"--classes: {', '.join(unknown)} not in the store's classes {all_classes}")
    class_names = list(classes) if classes is not None else all_classes
    candidates = samples if samples is not None else store.samples("train")
    chosen = select_samples([s for s in candidates if s.checked], classes, limit)
    if not chosen:
        raise QuickstudyError(
            f"{out_dir}: no training images (train split empty, or --classes/--limit left none)"
        )
    train_samples, validation_samples = split_validation(chosen) if hold_out else (chosen, chosen)
    config = config or DetectorConfig()
    config.train_classes = class_names
    config.channels = channels if channels is not None else colour_channels(train_samples)
    if image_size == "auto":
        config.image_size = input_size_for(train_samples)
    elif image_size is not None:
        config.image_size = int(image_size)
    config.tiling = needs_tiling(train_samples, config.image_size) if tiling == "auto" else tiling == "on"
    torch.manual_seed(seed)
    model = DefectDetector(class_names, config, weights=weights)
    initialised_from = load_pretrained_backbone(model, init) if init is not None else None
    model.to(device)
    started = time.perf_counter()
    method = get_weighting(weighting, n_tasks=2).to(device)
    trained = nn.ModuleDict({"detector": model, "weighting": method})
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trained.parameters() if p.ndim > 1], "weight_decay": 0.05},
            {"params": [p for p in trained.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    world = distributed.world_size()
    per_epoch = max(1, len(train_samples) // (batch_size * world))
    steps = max(1, epochs * per_epoch)
    warmup = min(300, max(1, steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    train_config = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weighting": weighting,
        "classes": class_names,
        "limit": limit,
        "seed": seed,
        "init": initialised_from,
        "hold_out": hold_out,
        "augment": augment,
        "photometric": photometric,
        "synthetic_defects": synthetic_defects,
        "squeeze": squeeze,
        "n_train": len(train_samples),
        "n_validation": len(validation_samples),
        "detector": config.to_dict(),
    }
    shared = list(model.backbone.parameters())
    # before the images are decoded: a folder holding another run is refused at once
    trainer = Trainer(
        trained,
        optimizer,
        out_dir=out_dir,
        steps=steps,
        kind="detector-training",
        config=train_config,
        scheduler=scheduler,
        device=device,
        amp=amp and device.startswith("cuda"),
        grad_clip=10.0,
        checkpoint_every=max(100, per_epoch * 5),
        log_every=max(1, min(50, per_epoch)),
        desc="train detector",
        backward=lambda out: method.backward([out["loss_localize"], out["loss_recognize"]], shared),
    )
    fitted = DetectionSet.from_samples(
        train_samples, class_names, config.image_size, config.channels, tiling=config.tiling
    )
    validation_set = (  # decoded once where the fitted images double as validation
        fitted
        if validation_samples is train_samples
        else DetectionSet.from_samples(
            validation_samples, class_names, config.image_size, config.channels, tiling=config.tiling
        )
    )
    train_set = fitted.to(device)
    loader = StepLoader(
        fitted.images,
        StepIndices.for_this_rank(
            len(train_set), per_epoch, batch_size, seed, fitted.valid.any(1) if config.tiling else None
        ),
        trainer.start_step,
        steps,
        workers=workers,
        pin=device.startswith("cuda"),
    )

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        indices, views = loader.get(step)
        images, targets = train_set.batch(
            indices,
            step_generator(seed, step, distributed.rank()),
            augment,
            photometric=photometric,
            decoded=views,
            synthetic=synthetic_defects,
            squeeze=squeeze,
        )
        out = model(images, targets)
        assert isinstance(out, dict)
        return {"loss": out["loss_localize"] + out["loss_recognize"], **out}

    trainer.fit(step_fn)
    loader.close()  # before calibration decodes: the workers' caches and the main one never coexist
    train_seconds = time.perf_counter() - started
    if not distributed.is_main():
        return 0
    fit_normality(model, train_set, validation_set)
    calibrate(model, train_set, validation_set)
    return ModelFolder(out_dir).save(
        detector_payload(
            model,
            taxonomy_version=store.taxonomy_version(),
            **store_fingerprint(store),
            note=f"trained {epochs} epochs on {len(train_set)} images"
            + (f", backbone from {initialised_from['method']} pretraining" if initialised_from else ""),
            train=train_config,
            train_seconds=train_seconds,
        )
    )
