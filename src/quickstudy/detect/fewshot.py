"""New defect types from a few marked images, without retraining and without forgetting.

A new class is a new row of the class memory: the robust mean of the embeddings of its K support
boxes (:func:`~quickstudy.detect.memory.robust_mean`). The network is untouched, so the boxes it finds and the embeddings of
every other class stay exactly as they were; only the softmax over prototypes gains one entry.
``adapt`` optionally tunes the new prototypes for a few steps on the support boxes against the
held base prototypes. :func:`finetune_classifier` is the TFA-style baseline (Wang et al. 2020):
new randomly initialised class rows and the whole last layer fine-tuned on a balanced K-shot set.

A localizer trained on other defect types may not propose boxes of a new one at all (P3: 94% of
the novel boxes were never proposed), and then no prototype can name them. The support boxes are
boxes, so they can teach localization too: :func:`adapt_localizer` tunes a second localization head,
the learned types' (:attr:`DefectDetector.learned_localize`), on them, mixed with replayed images the
model already knows, with the backbone and FPN frozen — so every box's embedding, and with it every
prototype, stays exactly what it was — while the trained types keep the base head's proposals.

A type that looks like a known one lands on it, however many boxes mark it, because the features
were never asked to tell the two apart (P3: scratches and inclusion). :func:`tune_recognizer` then
tunes the recognition head's MLP on the support boxes with known boxes replayed and held to their
embeddings, where held-out support images (:func:`check_recognizer`) say it helps.

``transductive`` refines the new prototypes on the store's other TRAIN images, read as images only
(their labels are never looked at, the P3-u sense): :func:`refine_on_images`.

>>> version = learn_class("runs/neu", store, "scratches", images=["scratches_1.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from quickstudy.detect.data import DetectionSet, letterbox, read_for_model
from quickstudy.detect.evaluation import proposal_recall
from quickstudy.detect.memory import (
    DEFAULT_OPERATING,
    ClassMemory,
    just_above,
    leave_one_out_cut,
    matched_cut,
    robust_mean,
)
from quickstudy.detect.model import DefectDetector, detector_from_payload, detector_payload
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.recognition import partial_label_loss
from quickstudy.detect.versions import ModelFolder, store_fingerprint
from quickstudy.errors import QuickstudyError
from quickstudy.meta.transductive import refine_prototypes

SupportSet = list[tuple[Path, list[tuple[float, float, float, float]]]]

# Weight of adapt_localizer's distillation on replayed images. P3, K = 5, 5 seeds (tiny): bAP50 cost 3.7 /
# 1.7 / 0.8 / 0.1 points at 0 / 20 / 50 / 100 for nAP50 19.9 / 19.4 / 17.0 / 14.6 (unknowns.md).
LOCALIZER_DISTILLATION = 50.0
# adapt_localizer's steps. P3 at the full recipe, 5 seeds: nAP50 at K = 5 21.8 / 25.2 and at K = 10
# 24.4 / 28.1 at 60 / 150 steps, bAP50 within 1 point of the base model's at K = 1, 5 and 10 (unknowns.md).
LOCALIZER_STEPS = 150
# adapt_localizer's centre share along the support's elongated boxes. P3, 5 seeds, at 0 / 0.25 / 0.5:
# K = 10 nAP50 35.7 / 37.8 / 38.3, bAP50 after learning 0.603 / 0.602 / 0.588; K = 5 (0 / 0.25) nAP50
# 29.0 / 31.1, bAP50 0.590 / 0.584 (unknowns.md).
LOCALIZER_CENTER_SHARE = 0.25
# adapt_recognizer's steps and the weight of its distillation on known boxes (P3: unknowns.md).
RECOGNIZER_STEPS = 50
RECOGNIZER_DISTILLATION = 10.0
# Folds (by support image) in which check_recognizer holds support images out.
RECOGNIZER_FOLDS = 5
# Below this share of support boxes proposed by the base head at IoU >= 0.5, learn_class adapts a localizer.
PROPOSED_FOR_PROTOTYPE_ONLY = 0.5
# A tuning of the recognition head that learn chose by itself is undone when it names this share fewer
# checked known boxes right.
FORGETTING_TOLERANCE = 0.03
# TRAIN images of known types, other than the replayed ones, on which that is checked
CHECK_IMAGES = 64
# Image-level precision (at even odds) a new class's threshold must reach on its support and known negatives.
PRECISION_TARGET = 0.9
# What learn_class reports progress through, in order: embedding the support boxes (and choosing
# whether to adapt the localizer), adapting the localizer, then the recognition head, transductive
# refinement, the threshold.
LEARN_PHASES = ("support", "localizer", "recognizer", "transductive", "threshold")
# TRAIN images without the class checked when a new class's threshold is set.
NEGATIVE_IMAGES = 200
# TRAIN images (labels unread) whose proposals refine a new prototype with --transductive.
UNLABELLED_IMAGES = 200
# Only proposals at least this likely to be a defect take part in transductive refinement.
TRANSDUCTIVE_DEFECT_SCORE = 0.5


def support_boxes(
    store: Any, name: str, images: Sequence[str | os.PathLike[str]] | None = None
) -> SupportSet:
    """The boxes labelled exactly ``name`` in the store: in ``images`` (each must hold one), or in
    every TRAIN image when ``images`` is None (``--from-store``)."""
    if name not in store.classes():
        raise QuickstudyError(
            f"class {name!r} is not in the store's taxonomy ({', '.join(store.classes())}); "
            "add it and mark its boxes first"
        )
    if images is None:
        found = [(s.path, [b.xyxy for b in s.boxes if b.allowed == {name}]) for s in store.samples("train")]
        found = [(path, boxes) for path, boxes in found if boxes]
        if not found:
            raise QuickstudyError(f"no TRAIN image in the store holds a box labelled {name!r}")
        return found
    by_path = {Path(s.path).resolve(): s for s in store.samples()}
    result: SupportSet = []
    for image in images:
        sample = by_path.get(Path(image).resolve())
        if sample is None:
            raise QuickstudyError(f"{image}: not in the label store; import it and mark its {name!r} boxes")
        boxes = [b.xyxy for b in sample.boxes if b.allowed == {name}]
        if not boxes:
            raise QuickstudyError(f"{image}: holds no box labelled {name!r}; mark one first")
        result.append((Path(sample.path), boxes))
    return result


@torch.no_grad()
def pool_support(model: DefectDetector, support: SupportSet, batch_size: int = 16) -> torch.Tensor:
    """What the recognition MLP reads of every support box (boxes in the images' own pixels),
    ``[K, C, P, P]`` on the model's device."""
    model.eval()
    size = model.config.image_size
    device = model.device
    chunks = []
    for start in range(0, len(support), batch_size):
        images, boxes = [], []
        for path, image_boxes in support[start : start + batch_size]:
            image, scale = letterbox(read_for_model(path, model.config.channels)[0], size)
            images.append(image)
            boxes.append(torch.tensor(image_boxes, dtype=torch.float32) * scale)
        batch = torch.stack(images).to(device).float() / 255
        chunks.append(model.pool_boxes(batch, [b.to(device) for b in boxes]))
    return torch.cat(chunks)


@torch.no_grad()
def embed_support(model: DefectDetector, support: SupportSet, batch_size: int = 16) -> torch.Tensor:
    """Embeddings ``[K, D]`` of every support box (boxes in the images' own pixels), on the CPU."""
    return model.recognize.project(pool_support(model, support, batch_size)).cpu()


def pool_known(
    model: DefectDetector, samples: Sequence[Any], new: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes of ``samples`` whose allowed classes the model all knows, as :func:`pool_support`
    gives them, and those classes ``[N, C]`` (bool over ``model.classes``): a box of one class, or one
    of several (an old box of a split class is one of its parts). A box of the ``new`` class alone is
    left out: that class learns from its support images only."""
    support: SupportSet = []
    allowed: list[list[bool]] = []
    for sample in samples:
        known = [
            b for b in sample.boxes if b.allowed and b.allowed <= set(model.classes) and b.allowed != {new}
        ]
        if known:
            support.append((Path(sample.path), [b.xyxy for b in known]))
            allowed += [[c in b.allowed for c in model.classes] for b in known]
    if not support:
        return torch.zeros(0), torch.zeros(0, len(model.classes), dtype=torch.bool)
    return pool_support(model, support), torch.tensor(allowed)


def adapt_recognizer(
    model: DefectDetector,
    support: dict[str, torch.Tensor],
    known: torch.Tensor,
    known_allowed: torch.Tensor,
    *,
    steps: int = RECOGNIZER_STEPS,
    lr: float = 1e-3,
    distill: float = RECOGNIZER_DISTILLATION,
) -> dict[str, torch.Tensor]:
    """Tune the recognition head's MLP so that the support boxes of each new class (``support``: its
    name → pooled boxes from :func:`pool_support`; the class already in the memory) lie nearer the mean
    of their embeddings than any other class's prototype, and the ``known`` pooled boxes nearer one of
    their classes' (``known_allowed``, from :func:`pool_known`; classes added to the memory since, at its
    end, are not theirs).
    A prototype of a few boxes sits where features learned from other types put it; a type the base
    training never had to tell from a similar one (P3: scratches from inclusion) lands on it, and only
    the features can move. Each known box is also held to the embedding it had (distillation, weighted
    ``distill``), so the known prototypes and the calibrated cuts stay valid. Backbone, localizer and
    prototypes are not touched; returns each new class's support embeddings after tuning (CPU), from
    which :func:`add_classes` makes its prototype."""
    if steps < 1 or not support:
        raise QuickstudyError(
            f"adapt_recognizer: {len(support)} new classes, {steps} steps; need at least one of each"
        )
    memory = model.memory
    head = model.recognize
    device = model.device
    rows = torch.tensor([memory.index(name) for name in support], device=device)
    pooled = torch.cat(list(support.values())).to(device)
    labels = torch.cat([torch.full((len(p),), i) for i, p in enumerate(support.values())]).to(device)
    known = known.to(device)
    known_allowed = F.pad(known_allowed, (0, len(memory) - known_allowed.shape[1])).to(device)
    prototypes = F.normalize(memory.prototypes.to(device), dim=-1)
    scale = head.log_scale.exp().detach()
    with torch.no_grad():
        held = head.project(known) if len(known) else None
    optimizer = torch.optim.AdamW(head.mlp.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        embedded = head.project(pooled)
        means = torch.stack([F.normalize(embedded[labels == i].mean(0), dim=0) for i in range(len(rows))])
        current = prototypes.index_put((rows,), means)
        loss = F.cross_entropy(scale * embedded @ current.T, rows[labels])
        if held is not None:
            replayed = head.project(known)
            loss = loss + partial_label_loss(scale * replayed @ current.T, known_allowed)
            loss = loss + distill * (replayed - held).pow(2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return {name: head.project(p.to(device)).cpu() for name, p in support.items()}


def pool_support_images(model: DefectDetector, support: SupportSet) -> list[torch.Tensor]:
    """:func:`pool_support`, one tensor per support image."""
    return list(pool_support(model, support).split([len(boxes) for _, boxes in support]))


@dataclass(frozen=True)
class RecognizerCheck:
    """What tuning the recognition head does for support boxes it was not tuned on
    (:func:`check_recognizer`): the share of held-out support boxes whose nearest prototype is their
    class's, with the head as it is (``prototype``) and tuned on the other support images (``tuned``),
    and per class the lowest similarity of a held-out box to the tuned mean of the others (``cuts``:
    the class's own unknown cut, as :func:`~quickstudy.detect.memory.leave_one_out_cut` for an untuned
    head), and where the images were given, their raw outputs from the folds that held them out
    (``outputs``: scores the new class's threshold can be set on, as it cannot on images it was tuned
    on)."""

    boxes: int
    prototype: float
    tuned: float
    cuts: dict[str, float]
    # per class given image paths, each support image's raw output from the fold that held it out
    outputs: dict[str, list[dict[str, torch.Tensor]]]


def check_recognizer(
    model: DefectDetector,
    support: dict[str, list[torch.Tensor]],
    known: torch.Tensor,
    known_allowed: torch.Tensor,
    folds: int = RECOGNIZER_FOLDS,
    paths: dict[str, list[Path]] | None = None,
) -> RecognizerCheck | None:
    """Cross-validate :func:`adapt_recognizer` over the support images (``support``: each new class's
    pooled boxes per image, :func:`pool_support_images`): in each of up to ``folds`` folds the head is
    tuned on the other images (``known`` boxes replayed as :func:`adapt_recognizer` replays them) and
    the held-out boxes are named against the means of the others. Boxes it was tuned on lie near their
    mean however little the tuning generalises, so only held-out boxes tell whether it helps, and how
    far a class's unseen boxes lie. ``paths`` (each class's support images, in ``support``'s order):
    each held-out image is also predicted by the fold's model. The head and the memory are left as they
    were. None when no class has two images."""
    held = [name for name, images in support.items() if len(images) >= 2]
    if not held:
        return None
    count = min(folds, max(len(support[name]) for name in held))
    head = model.recognize
    as_it_was = copy.deepcopy(head.mlp.state_dict())
    untuned = _project_images(model, support)
    right = {"prototype": 0, "tuned": 0}
    lowest: dict[str, float] = {}
    memory = model.memory
    outputs: dict[str, dict[int, dict[str, torch.Tensor]]] = {name: {} for name in held if paths}
    for fold in range(count):
        out = {
            name: [name in held and i % count == fold for i in range(len(images))]
            for name, images in support.items()
        }
        kept = {name: torch.cat(_pick(images, out[name], False)) for name, images in support.items()}
        tuned = adapt_recognizer(model, kept, known, known_allowed)
        retuned = _project_images(
            model, {name: _pick(images, out[name], True) for name, images in support.items()}
        )
        if outputs and paths:
            for name, embeddings in tuned.items():  # the fold's prototypes, as learn would make them
                model.memory = model.memory.replace(name, robust_mean(embeddings), None)
            for name, predicted in outputs.items():
                indices = [i for i, flag in enumerate(out[name]) if flag]
                found = Predictor(model).raw([paths[name][i] for i in indices])
                predicted.update(zip(indices, found, strict=True))
            model.memory = memory
        head.mlp.load_state_dict(as_it_was)
        before, labels = _against_means(
            model.memory,
            {name: robust_mean(torch.cat(_pick(e, out[name], False))) for name, e in untuned.items()},
            {name: _pick(e, out[name], True) for name, e in untuned.items()},
        )
        after, _ = _against_means(model.memory, {name: robust_mean(e) for name, e in tuned.items()}, retuned)
        right["prototype"] += int((before.argmax(-1) == labels).sum())
        right["tuned"] += int((after.argmax(-1) == labels).sum())
        for name in held:
            index = model.memory.index(name)
            own = after[labels == index, index]
            if own.numel():
                lowest[name] = min(lowest.get(name, 1.0), float(own.min()))
    boxes = sum(len(p) for name in held for p in support[name])
    return RecognizerCheck(
        boxes,
        right["prototype"] / boxes,
        right["tuned"] / boxes,
        lowest,
        {name: [predicted[i] for i in range(len(support[name]))] for name, predicted in outputs.items()},
    )


def _pick(images: list[torch.Tensor], held_out: list[bool], which: bool) -> list[torch.Tensor]:
    """The ``images`` whose ``held_out`` flag is ``which``."""
    return [image for image, flag in zip(images, held_out, strict=True) if flag == which]


@torch.no_grad()
def _project_images(
    model: DefectDetector, pooled: dict[str, list[torch.Tensor]]
) -> dict[str, list[torch.Tensor]]:
    """Embeddings (CPU) of pooled boxes, kept in the same lists."""
    return {
        name: [model.recognize.project(p.to(model.device)).cpu() for p in images]
        for name, images in pooled.items()
    }


def _against_means(
    memory: ClassMemory, means: dict[str, torch.Tensor], held_out: dict[str, list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities ``[N, C]`` of held-out embeddings to the memory's prototypes with the new classes'
    rows replaced by ``means``, and each box's class index ``[N]``."""
    rows = memory.prototypes.clone()
    for name, mean in means.items():
        rows[memory.index(name)] = mean
    embedded = torch.cat([e for images in held_out.values() for e in images])
    labels = torch.cat(
        [torch.full((len(e),), memory.index(name)) for name, images in held_out.items() for e in images]
    )
    return embedded @ rows.T, labels


def tune_recognizer(
    model: DefectDetector,
    support: dict[str, list[torch.Tensor]],
    replayed: tuple[torch.Tensor, torch.Tensor],
    checked: tuple[torch.Tensor, torch.Tensor],
    *,
    choose: bool,
    adapt: bool = False,
    paths: dict[str, list[Path]] | None = None,
) -> tuple[str, dict[str, list[dict[str, torch.Tensor]]]]:
    """Tune the recognition head for the new classes of ``support`` (pooled boxes per support image,
    :func:`pool_support_images`; the classes already in the memory) with the ``replayed`` known boxes
    (:func:`pool_known`), make their prototypes again from the tuned embeddings (:func:`add_classes`,
    ``adapt`` as there) and give each its own unknown cut from :func:`check_recognizer`'s held-out
    boxes. The memory's common unknown cuts then move with the ``checked`` known boxes (not replayed)
    so that they call the same share of them unknown as before (:func:`~quickstudy.detect.memory.matched_cut`).
    ``choose``: only where tuning names more held-out support boxes right than the prototypes do, or
    where one support image leaves none to hold out (on P3 at K = 1 tuning named more; unknowns.md), and
    undone where it names :data:`FORGETTING_TOLERANCE` fewer checked known boxes right. Returns the
    version's note and, where the head was tuned and ``paths`` (the support images) were given, each
    support image's raw output from the fold that held it out (:class:`RecognizerCheck`), for the new
    class's threshold."""
    check = check_recognizer(model, support, *replayed, paths=paths)
    seen = (
        f"held-out support boxes named right {check.prototype:.0%} → {check.tuned:.0%} of {check.boxes}"
        if check is not None
        else "one support image, none to hold out"
    )
    if choose and check is not None and check.tuned <= check.prototype:
        return f" (recognition head left as it was: {seen})", {}
    as_it_was = copy.deepcopy(model.recognize.mlp.state_dict()), model.memory
    before = _known_nearness(model, *checked, support)
    add_classes(
        model, adapt_recognizer(model, {n: torch.cat(p) for n, p in support.items()}, *replayed), adapt
    )
    own = {n: cut for n, cut in model.memory.unknown_by_class.items() if n not in support}
    model.memory = model.memory.with_thresholds(unknown_by_class={**own, **(check.cuts if check else {})})
    after = _known_nearness(model, *checked, support)
    moved = ""
    if before is not None and after is not None:
        named = f"checked known boxes named right {before[1]:.0%} → {after[1]:.0%}"
        if choose and after[1] < before[1] - FORGETTING_TOLERANCE:  # a new type must not cost the others
            model.recognize.mlp.load_state_dict(as_it_was[0])
            model.memory = as_it_was[1]
            return f" (recognition head left as it was: {seen}, but {named})", {}
        memory = model.memory
        cuts = [matched_cut(cut, before[0], after[0]) for cut in (memory.unknown, memory.unknown_far)]
        model.memory = memory.with_thresholds(unknown=cuts[0], unknown_far=cuts[1])
        moved = f"; {named}, unknown cuts {memory.unknown:.3f} / {memory.unknown_far:.3f} → {cuts[0]:.3f} / {cuts[1]:.3f}"
    by_itself = " by itself" if choose else ""
    note = f" (recognition head adapted{by_itself}: {seen}; {len(replayed[1])} known boxes replayed{moved})"
    return note, check.outputs if check is not None else {}


@torch.no_grad()
def _known_nearness(
    model: DefectDetector, pooled: torch.Tensor, allowed: torch.Tensor, new: Collection[str]
) -> tuple[torch.Tensor, float] | None:
    """Of known boxes (:func:`pool_known`): each one's nearness (:meth:`ClassMemory.nearest`, the
    ``new`` classes held to the common cut: a low cut of their own would make every known box near
    them look near) and the share whose nearest prototype is one of their classes'; None without boxes."""
    if not len(allowed):
        return None
    own = {name: cut for name, cut in model.memory.unknown_by_class.items() if name not in new}
    memory = model.memory.with_thresholds(unknown_by_class=own)
    similarity = memory.similarity(model.recognize.project(pooled.to(model.device)).cpu())
    nearest_class = similarity.argmax(-1, keepdim=True)
    right = F.pad(allowed, (0, len(memory) - allowed.shape[1])).gather(1, nearest_class)
    return memory.nearest(similarity), float(right.float().mean())


def adapt_prototypes(
    model: DefectDetector, new: Sequence[str], embeddings: torch.Tensor, labels: torch.Tensor, steps: int = 50
) -> None:
    """Tune the prototypes of the ``new`` classes only (base rows held) so that the support
    embeddings (``labels`` index ``model.classes``) and the base prototypes themselves are
    classified correctly; the network is not touched."""
    memory = model.memory
    rows = torch.tensor([memory.index(n) for n in new])
    prototypes = memory.prototypes.clone()
    trainable = prototypes[rows].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([trainable], lr=0.01)
    held = torch.ones(len(memory), dtype=torch.bool)
    held[rows] = False
    anchors = prototypes[held]  # base prototypes stand in for base examples
    anchor_labels = torch.nonzero(held).flatten()
    inputs = torch.cat([embeddings, anchors])
    targets = torch.cat([labels, anchor_labels])
    scale = model.recognize.log_scale.exp().detach().cpu()
    for _ in range(steps):
        tuned = prototypes.index_put((rows,), trainable)
        loss = F.cross_entropy(scale * inputs @ F.normalize(tuned, dim=-1).T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, row in zip(new, trainable.detach(), strict=True):
        memory = memory.replace(name, row, memory.unknown_by_class.get(name))
    model.memory = memory


def adapt_localizer(
    model: DefectDetector,
    support: DetectionSet,
    replay: DetectionSet | None = None,
    *,
    classes: Collection[str],
    steps: int = LOCALIZER_STEPS,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    distill: float = LOCALIZER_DISTILLATION,
    center_share: float = LOCALIZER_CENTER_SHARE,
    progress: Callable[[float], None] | None = None,
) -> dict[str, float]:
    """Fine-tune the learned types' localization head (:meth:`DefectDetector.add_learned_localize`:
    a copy of the base head the first time) on every box of the ``support`` images (localization is
    class-agnostic, so their class does not matter), each batch half support, half ``replay``
    (images of known types: their surface, and the learned head's earlier types, so it keeps finding
    them). On the replayed images the head is also held to the scores and centerness it gave before,
    weighted by ``distill`` (distillation, as Learning without Forgetting, Li & Hoiem 2016, keeps a
    network's old outputs). Augmented with flips (axes kept) and brightness/contrast, as P3 measured
    it. ``classes`` (the support's types) then take their detections from that head. Backbone, FPN and
    the base head stay frozen, so embeddings, prototypes, recognition and the other types' proposals
    are unchanged. Returns the mean localization loss (without the distillation) of the first and
    last 10 steps. ``center_share``: along the support's elongated
    boxes, locations within this share of a box's half-length of its centre are positive too
    (:meth:`~quickstudy.detect.localization.LocalizationHead.assign`), so a long new defect's middle learns
    its whole box. ``progress``, if given, is called with the share of steps done after each step.

    >>> adapt_localizer(model, DetectionSet.from_samples(marked, [], 200), classes=["pit"])  # doctest: +SKIP
    """
    if len(support) == 0 or steps < 1:
        raise QuickstudyError(
            f"adapt_localizer: {len(support)} support images, {steps} steps; need at least one of each"
        )
    strangers = sorted(set(classes) - set(model.classes))
    if not classes or strangers:
        raise QuickstudyError(
            f"adapt_localizer: classes {sorted(classes)} must be some of the model's {model.classes}"
        )
    head = model.add_learned_localize()
    device = model.device
    generator = torch.Generator().manual_seed(seed)
    parts = [support.to(device)] + ([replay.to(device)] if replay is not None and len(replay) else [])
    shares = [batch_size - batch_size // 2, batch_size // 2] if len(parts) == 2 else [batch_size]
    model.eval()  # BatchNorm statistics of the frozen backbone stay as trained
    # the head as it was: on replayed images the adapted one is held to its scores (distillation)
    teacher = copy.deepcopy(head).eval() if distill and len(parts) == 2 else None
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        images, boxes, valid = [], [], []
        for part, share in zip(parts, shares, strict=True):
            picked = torch.randint(len(part), (share,), generator=generator)
            part_images, targets = part.batch(picked, generator, jitter=0, photometric=True)
            images.append(part_images)
            boxes.append(targets["boxes"])
            valid.append(targets["valid"])
        width = max(b.shape[1] for b in boxes)
        boxes = [F.pad(b, (0, 0, 0, width - b.shape[1])) for b in boxes]
        valid = [F.pad(v, (0, width - v.shape[1])) for v in valid]
        reach = torch.zeros(sum(shares), width, device=device)
        reach[: shares[0]] = center_share  # the support's boxes only: the replayed ones learn as before
        with torch.no_grad():
            features = model.features(torch.cat(images))
        dense = head(features)
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        parts_of_loss = head.compute_loss(
            dense, sizes, torch.cat(boxes), torch.cat(valid), reach if center_share else None
        )
        loss = torch.stack(list(parts_of_loss.values())).sum()
        total = loss
        if teacher is not None:
            replayed = [f[shares[0] :] for f in features]
            with torch.no_grad():
                taught = teacher(replayed)
            for key in ("logits", "centerness"):
                total = total + distill * F.binary_cross_entropy_with_logits(
                    dense[key][shares[0] :].float(), taught[key].float().sigmoid()
                )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress((step + 1) / steps)
    model.set_learned_classes([*model.learned_classes, *classes])
    return {
        "loss_first": sum(losses[:10]) / len(losses[:10]),
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
    }


def add_classes(
    model: DefectDetector,
    support: dict[str, torch.Tensor],
    adapt: bool = False,
) -> None:
    """Add (or replace) one prototype per class name from its support embeddings ``[K, D]``: their
    :func:`~quickstudy.detect.memory.robust_mean`; ``adapt`` then tunes them (:func:`adapt_prototypes`).
    A class's unseen boxes lie farther from a mean of a few boxes than known boxes from their class's,
    so each new class gets its own unknown cut, the :func:`~quickstudy.detect.memory.leave_one_out_cut`
    of its support (it counts where lower than the memory's: :meth:`ClassMemory.nearest`)."""
    memory = model.memory
    for name, embeddings in support.items():
        row = robust_mean(embeddings)
        cut = leave_one_out_cut(embeddings)
        memory = (
            memory.replace(name, row, cut) if name in memory.classes else memory.add(name, row, None, cut)
        )
    model.memory = memory
    if adapt:
        embeddings = torch.cat(list(support.values()))
        labels = torch.cat([torch.full((len(e),), memory.index(n)) for n, e in support.items()])
        adapt_prototypes(model, list(support), embeddings, labels)


def unlabelled_images(store: Any, support: SupportSet, limit: int = UNLABELLED_IMAGES) -> list[Path]:
    """Up to ``limit`` TRAIN images (seeded sample) other than the support images; only their pixels
    are used, never their boxes or status."""
    support_paths = {Path(path).resolve() for path, _ in support}
    candidates = [Path(s.path) for s in store.samples("train") if Path(s.path).resolve() not in support_paths]
    picked = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(0))[:limit]
    return [candidates[int(i)] for i in sorted(picked.tolist())]


@torch.no_grad()
def refine_on_images(
    model: DefectDetector,
    new: Sequence[str],
    support_counts: Sequence[int],
    images: Sequence[Path],
    steps: int,
) -> int:
    """Move the ``new`` classes' prototypes towards the embeddings of confident proposals
    (defect score >= :data:`TRANSDUCTIVE_DEFECT_SCORE`) on ``images``, softly assigned over every
    prototype (:func:`~quickstudy.meta.transductive.refine_prototypes`, one step at a time with the
    base prototypes held); return how many proposals took part. A prototype of K boxes keeps K times
    the weight of one fully assigned proposal."""
    found = Predictor(model).proposals(list(images)) if images else []
    queries = [out["embeddings"][out["defect_scores"] >= TRANSDUCTIVE_DEFECT_SCORE] for out in found]
    embeddings = F.normalize(torch.cat(queries), dim=-1) if queries else torch.zeros(0)
    if len(embeddings) == 0:
        return 0
    memory = model.memory
    rows = torch.tensor([memory.index(n) for n in new])
    counts = torch.ones(len(memory))
    counts[rows] = torch.tensor([float(k) for k in support_counts])
    # unit vectors: squared distance 2 - 2 cos, so temperature 2 / scale is the head's own softmax
    temperature = float(2 / model.recognize.log_scale.exp())
    prototypes = memory.prototypes.clone()
    for _ in range(steps):
        moved = refine_prototypes(prototypes, embeddings, temperature=temperature, support_counts=counts)
        prototypes[rows] = F.normalize(moved[rows], dim=-1)
    for name, row in zip(new, prototypes[rows], strict=True):
        memory = memory.replace(name, row, memory.unknown_by_class.get(name))
    model.memory = memory
    return len(embeddings)


def finetune_classifier(
    model: DefectDetector,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    new: Sequence[str],
    steps: int = 200,
    lr: float = 0.01,
    seed: int = 0,
) -> None:
    """TFA-style baseline: append randomly initialised rows for ``new`` classes, then fine-tune all
    class rows (base rows start from their prototypes) on a balanced K-shot set of box embeddings
    (``labels`` index the extended class list); the network stays frozen."""
    generator = torch.Generator().manual_seed(seed)
    memory = model.memory
    rows = torch.cat(
        [
            memory.prototypes,
            F.normalize(torch.randn(len(new), memory.prototypes.shape[1], generator=generator), dim=-1),
        ]
    ).requires_grad_(True)
    optimizer = torch.optim.SGD([rows], lr=lr, momentum=0.9)
    scale = model.recognize.log_scale.exp().detach().cpu()
    for _ in range(steps):
        loss = F.cross_entropy(scale * embeddings @ F.normalize(rows, dim=-1).T, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.memory = ClassMemory(
        [*memory.classes, *new],
        rows.detach(),
        memory.operating,
        memory.unknown,
        memory.unknown_far,
        memory.unknown_operating,
    )


def _support_and_known_samples(
    store: Any, name: str, support: SupportSet
) -> tuple[list[Any], list[Any], list[Any]]:
    """The support images' samples; the other TRAIN samples that hold boxes but none that may be of
    ``name`` (what the model already finds, for the localizer); and every other TRAIN sample with
    boxes (for the recognizer, which reads only the boxes the model knows: :func:`pool_known`); the
    two in a seeded order."""
    paths = {Path(path).resolve() for path, _ in support}
    samples = store.samples()  # one read of the store for every list
    resolved = [Path(s.path).resolve() for s in samples]
    marked = [s for s, path in zip(samples, resolved, strict=True) if path in paths]
    rest = [
        s
        for s, path in zip(samples, resolved, strict=True)
        if s.split == "train" and s.boxes and path not in paths
    ]
    others = [s for s in rest if all(name not in b.allowed for b in s.boxes)]

    def seeded(kept: list[Any]) -> list[Any]:
        return [
            kept[i] for i in torch.randperm(len(kept), generator=torch.Generator().manual_seed(0)).tolist()
        ]

    return marked, seeded(others), seeded(rest)


def _replay_and_check(others: list[Any], replay_images: int) -> tuple[list[Any], list[Any]]:
    """Of the known samples of :func:`_support_and_known_samples`: the first ``replay_images`` (what the
    model already finds, replayed so it keeps finding it) and up to :data:`CHECK_IMAGES` more to check
    that it does (the replayed ones when there are no more)."""
    replay = others[:replay_images]
    # a small store replays all it has: then those images are the check (in-sample, still a check)
    return replay, others[replay_images : replay_images + CHECK_IMAGES] or replay[:CHECK_IMAGES]


def _localizer_sets(
    marked: list[Any],
    others: list[Any],
    learned: Collection[str],
    replay_images: int,
    image_size: int,
    channels: int,
) -> tuple[DetectionSet, DetectionSet | None]:
    """From :func:`_support_and_known_samples`: the support images with all their boxes, and the
    replayed samples of :func:`_replay_and_check` as images, those holding a box of the ``learned``
    classes (the learned head's earlier types, which it must keep finding) first."""
    owned = set(learned)
    earlier = [s for s in others if any(b.allowed and b.allowed <= owned for b in s.boxes)]
    first = {id(s) for s in earlier}
    rest = [s for s in others if id(s) not in first]
    replay, _ = _replay_and_check(earlier + rest, replay_images)
    return (
        DetectionSet.from_samples(marked, [], image_size, channels),
        DetectionSet.from_samples(replay, [], image_size, channels) if replay else None,
    )


def support_threshold(
    model: DefectDetector,
    name: str,
    support: SupportSet,
    iou: float = 0.5,
    outputs: Sequence[dict[str, torch.Tensor]] | None = None,
) -> float | None:
    """The operating threshold at which the support images of ``name`` are called positive: the
    lowest, over support images, of the best ``name`` score on a marked box (IoU ≥ ``iou``).

    In-sample, so optimistic, unless ``outputs`` (the support images' raw outputs) come from models
    that did not learn from them; it replaces a borrowed threshold that a new class's scores may never
    reach. Support images whose marked boxes get no ``name`` detection at all are left out (the
    localizer missed them; no threshold helps); ``None`` when that is every one.
    """
    index = model.classes.index(name)
    found = outputs if outputs is not None else Predictor(model).raw([path for path, _ in support])
    per_image = []
    for out, (_, boxes) in zip(found, support, strict=True):
        mine = out["labels"] == index
        overlap = box_iou(torch.tensor(boxes, dtype=torch.float32), out["boxes"][mine]) >= iou
        scores = torch.where(overlap, out["scores"][mine][None], torch.zeros(()))
        if scores.numel() and float(scores.max()) > 0:  # a box never proposed: no threshold helps
            per_image.append(float(scores.max()))
    return min(per_image) if per_image else None


def proposed_share(model: DefectDetector, support: SupportSet, iou: float = 0.5) -> float:
    """The share of support boxes that one of the base localization head's usual proposals (its top
    ones and, with a normality memory, the abnormal regions) overlaps at IoU ≥ ``iou``."""
    found = Predictor(model).proposals([path for path, _ in support])
    base = [{"boxes": out["boxes"][out["head"] == 0]} for out in found]
    return proposal_recall([boxes for _, boxes in support], base, iou)


def image_scores(model: DefectDetector, name: str, images: Sequence[str | os.PathLike[str]]) -> list[float]:
    """Per image, its highest detection score of class ``name`` (0 when it has none)."""
    index = model.classes.index(name)
    scores = []
    for start in range(0, len(images), 64):
        scores += _best_scores(Predictor(model).raw(list(images[start : start + 64])), index)
    return scores


def _best_scores(outputs: Sequence[dict[str, torch.Tensor]], index: int) -> list[float]:
    """Per raw output, its highest score of class ``index`` (0 when it has none)."""
    best = [out["scores"][out["labels"] == index] for out in outputs]
    return [float(mine.max()) if mine.numel() else 0.0 for mine in best]


def known_negatives(store: Any, name: str, support: SupportSet, limit: int = NEGATIVE_IMAGES) -> list[Path]:
    """Up to ``limit`` TRAIN images (seeded sample) known to hold no ``name``: checked, not in the
    support set, and every box labelled with classes that exclude ``name`` (a box without class, or a
    partial label that allows ``name``, might be one)."""
    support_paths = {Path(path).resolve() for path, _ in support}
    candidates = [
        Path(s.path)
        for s in store.samples("train")
        if s.checked
        and Path(s.path).resolve() not in support_paths
        and all(b.allowed and name not in b.allowed for b in s.boxes)
    ]
    picked = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(0))[:limit]
    return [candidates[int(i)] for i in sorted(picked.tolist())]


def threshold_for_precision(
    model: DefectDetector,
    name: str,
    support: SupportSet,
    negatives: Sequence[Path] = (),
    support_outputs: Sequence[dict[str, torch.Tensor]] | None = None,
) -> tuple[float, str]:
    """The operating threshold of a class with no held-out images yet, for image-level recall and
    precision, and a note saying how it was set.

    Recall: the highest threshold that keeps every support image positive (:func:`support_threshold`;
    the median of the memory's calibrated thresholds when the detector finds none of them). Precision:
    over the support images (positives) and ``negatives`` (images known to hold no ``name``, from
    :func:`known_negatives`), the image-level precision at that threshold, at even odds (recall on the
    support over recall plus the share of negatives flagged: the few support images would otherwise
    be outweighed by the many negatives), must reach :data:`PRECISION_TARGET`. Where it does (and a
    support image was found), the threshold falls to the lowest at which it still does (the support
    images found stay positive below it, and unseen images of the class score lower than those it was
    made from); where it does not,
    the threshold rises to the lowest one that does while a support image stays positive; where none
    does, to the most precise such threshold (a class set above all its support images would never
    fire; on the demo's line that silenced ``inclusion``). The note says how many support images stay
    positive and, below the target, the precision reached. In-sample on the support images, so
    optimistic about recall, unless ``support_outputs`` (their raw outputs) come from models that did
    not learn from them (:func:`check_recognizer`'s folds, after the recognition head was tuned on them).
    """
    operating = model.memory.operating
    # one prediction of the support images serves both the recall and the precision side
    found = support_outputs if support_outputs is not None else Predictor(model).raw([p for p, _ in support])
    own = support_threshold(model, name, support, outputs=found)
    threshold = own if own is not None else (median(operating.values()) if operating else DEFAULT_OPERATING)
    if not negatives:
        return threshold, f"threshold {threshold:.3f} keeps every support image positive"
    positive = _best_scores(found, model.classes.index(name))
    negative = image_scores(model, name, negatives)

    def precision(t: float) -> float:  # at even odds: as many images with the class as without
        hit = sum(v >= t for v in positive) / len(positive)
        alarm = sum(v >= t for v in negative) / len(negative)
        return hit / (hit + alarm) if hit + alarm else 1.0

    if precision(threshold) < PRECISION_TARGET:
        higher = sorted(v for v in positive + negative if v > threshold)
        candidates = [t for t in higher if any(v >= t for v in positive)]  # a support image stays positive
        reaching = [t for t in candidates if precision(t) >= PRECISION_TARGET]
        # out of reach: the most precise threshold that still fires, not one above every support image
        threshold = (
            reaching[0] if reaching else max([threshold, *candidates], key=lambda t: (precision(t), -t))
        )
    elif own is not None:
        # the support images found are positive from here down: as low as the negatives let precision hold
        lower = [just_above(v) for v in negative if just_above(v) < threshold]
        threshold = min([t for t in lower if precision(t) >= PRECISION_TARGET], default=threshold)
    reached = precision(threshold)
    short = (
        ""
        if reached >= PRECISION_TARGET
        else f" (precision at even odds {reached:.2f}, under {PRECISION_TARGET})"
    )
    kept = sum(v >= threshold for v in positive)
    alarms = sum(v >= threshold for v in negative)
    held_out = " (each as scored by the fold that held it out)" if support_outputs is not None else ""
    return threshold, (
        f"threshold {threshold:.3f}: {kept} of {len(positive)} support images positive{held_out}, "
        f"{alarms} of {len(negative)} TRAIN images without it flagged{short}"
    )


def learn_class(
    model_dir: str | os.PathLike[str],
    store: Any,
    name: str,
    *,
    images: Sequence[str | os.PathLike[str]] | None = None,
    adapt: bool = False,
    localizer: bool | None = None,
    recognizer: bool | None = None,
    replay_images: int = 64,
    transductive: int = 0,
    device: str = "cpu",
    progress: Callable[[str, float], None] | None = None,
) -> int:
    """Add class ``name`` to the current model of ``model_dir`` from its marked boxes in the store
    (in ``images``, or in every TRAIN image if None); write and return the new version number.

    ``adapt`` tunes the new prototype (:func:`adapt_prototypes`); ``localizer`` tunes the learned
    types' localization head on every box of the support images with up to ``replay_images`` TRAIN
    images without the class replayed (:func:`adapt_localizer`), and the class's detections come from
    that head; None (the default) does so when fewer than :data:`PROPOSED_FOR_PROTOTYPE_ONLY` of the
    support boxes are proposed by the base head at IoU ≥ 0.5 (a prototype cannot name a box never
    proposed), and the version's note says so. The base head, which finds every other type, is never
    changed, so adapting cannot make the model forget them. ``recognizer`` then tunes the
    recognition head on the support boxes with the known boxes of ``replay_images`` other TRAIN images
    replayed, makes the prototype again from the tuned embeddings and moves the unknown cuts
    with it (:func:`tune_recognizer`); None (the default) does so where that names more held-out support
    boxes right (:func:`check_recognizer`), or where one support image leaves none to hold out, without
    costing known boxes, and the note says which.
    ``transductive`` > 0 refines the new prototype that many steps on other TRAIN images' proposals
    (:func:`refine_on_images`), after the localizer is adapted (so it sees what the adapted localizer
    proposes). A class without a threshold
    gets one for image-level recall and precision (:func:`threshold_for_precision`), its note too.
    Classes the model knows but the store no longer has (e.g. the parent of a split) are dropped from
    the new version; the old version keeps them. ``progress``, if given, is called with each phase's
    name (one of :data:`LEARN_PHASES`, in that order, those that run) and the share of it done: 0 when
    it starts, 1 when it ends, and after each step of the localizer's adaptation.
    """
    report = progress if progress is not None else lambda phase, done: None
    folder = ModelFolder(model_dir)
    payload = folder.load()
    model = detector_from_payload(payload, device)
    report("support", 0.0)
    support = support_boxes(store, name, images)
    embeddings = embed_support(model, support)
    current = set(store.classes())
    model.memory = model.memory.drop(c for c in model.classes if c not in current)
    model.set_learned_classes(model.learned_classes)
    add_classes(model, {name: embeddings}, adapt=adapt)
    notes = [" (prototype adapted)"] if adapt else []
    chosen = localizer is None
    if localizer is None:
        share = proposed_share(model, support)
        localizer = share < PROPOSED_FOR_PROTOTYPE_ONLY
        why = f"{share:.0%} of the support boxes were proposed"
    elif localizer:
        notes.append(" (localizer adapted)")
    report("support", 1.0)
    # one read of the store for both adaptations
    support_samples, known_samples, other_samples = (
        _support_and_known_samples(store, name, support)
        if localizer or recognizer is not False
        else ([], [], [])
    )
    if localizer:
        report("localizer", 0.0)
        marked, replay = _localizer_sets(
            support_samples,
            known_samples,
            [c for c in model.learned_classes if c != name],
            replay_images,
            model.config.image_size,
            model.config.channels,
        )
        adapt_localizer(
            model, marked, replay, classes=[name], progress=lambda done: report("localizer", done)
        )
        if chosen:
            notes.append(f" (localizer adapted by itself: {why})")
    else:  # not adapted: its detections come from the base head
        model.set_learned_classes([c for c in model.learned_classes if c != name])
    fold_outputs: dict[str, list[dict[str, torch.Tensor]]] = {}
    if recognizer is not False:
        report("recognizer", 0.0)
        replayed, checked = _replay_and_check(other_samples, replay_images)
        note, fold_outputs = tune_recognizer(
            model,
            {name: pool_support_images(model, support)},
            pool_known(model, replayed, name),
            pool_known(model, checked, name),
            choose=recognizer is None,
            adapt=adapt,
            paths={name: [path for path, _ in support]},
        )
        notes.append(note)
        report("recognizer", 1.0)
    if transductive > 0:
        report("transductive", 0.0)
        used = refine_on_images(
            model, [name], [len(embeddings)], unlabelled_images(store, support), transductive
        )
        notes.append(f" (prototype refined on {used} proposals of unlabelled images, {transductive} steps)")
        report("transductive", 1.0)
    report("threshold", 0.0)
    if name not in model.memory.operating:
        # the tuned head scores its support images higher than unseen ones: the folds' outputs instead
        # (unless transductive refinement has moved the prototype since)
        outputs = fold_outputs.get(name) if transductive == 0 else None
        threshold, why = threshold_for_precision(
            model, name, support, known_negatives(store, name, support), outputs
        )
        model.memory = model.memory.with_thresholds({**model.memory.operating, name: threshold})
        notes.append(f"; {why}")
    report("threshold", 1.0)
    n_boxes = sum(len(b) for _, b in support)
    return folder.save(
        detector_payload(
            model,
            taxonomy_version=store.taxonomy_version(),
            **store_fingerprint(store),
            note=f"learned {name!r} from {n_boxes} boxes in {len(support)} images" + "".join(notes),
            parent=payload.get("version"),
            train=payload.get("train"),
        )
    )
