"""The multi-task defect detector: ResNet+FPN, a class-agnostic localization head, a prototype
recognition head, and the class memory that names boxes (:class:`~quickstudy.detect.memory.ClassMemory`).

A pure ``nn.Module`` in torchvision's detection convention: ``model(images, targets)`` returns the
losses in training, ``model(images)`` returns one dict per image at inference. Images are
``[B, C, H, W]`` floats in [0, 1] (C = ``config.channels``) with H, W multiples of 32; pre- and post-processing for user
images (letterboxing, colour) lives in :class:`quickstudy.detect.predictor.Predictor`. :func:`detector_payload` and
:func:`detector_from_payload` turn a detector into a checkpoint payload and back.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, nms

from quickstudy.backbones.resnet_fpn import ResNetFPN
from quickstudy.detect.localization import LocalizationHead
from quickstudy.detect.memory import ClassMemory
from quickstudy.detect.normality import NormalityMemory
from quickstudy.detect.recognition import RecognitionHead
from quickstudy.errors import QuickstudyError


@dataclass
class DetectorConfig:
    """Everything needed to rebuild the network; stored in every checkpoint. The defaults are the
    ones measurement chose on NEU-DET (BENCHMARKS.md, detector rows)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    fpn_channels: int = 96
    head_convs: int = 2
    # positives lie within this many strides of a box's centre (FCOS's 1.5 scored lower on NEU-DET)
    center_radius: float = 1.0
    # level l learns the boxes whose size lies between bounds[l-1] and bounds[l]; size is the box's
    # half-size sqrt(w·h)/2 ("area": thin scratches stay on a fine grid) or a location's farthest edge
    # ("reach", FCOS)
    size_bounds: tuple[float, ...] = (32.0, 64.0)
    level_by: str = "area"
    # the defect score learns 0/1 with the sigmoid focal loss ("focal", FCOS) or, at a positive, the
    # IoU of the box predicted there with the quality focal loss ("quality", GFL: higher mAP)
    score_loss: str = "quality"
    # a box without class also learns the class it is predicted as where p(class) reaches this
    # (FixMatch's threshold; None: such boxes train the localizer only). Off when unlabelled boxes
    # may be of a type not yet named.
    pseudo_label_confidence: float | None = 0.95
    embedding_dim: int = 128
    # the long side of the network's input: images keep their aspect (resized, then padded)
    image_size: int = 200
    # 3 when the training images carry colour (their channels differ), else 1
    channels: int = 1
    # True: train on full-resolution crops and predict over overlapping tiles (small defects in large
    # frames); False: the whole image, letterboxed to image_size
    tiling: bool = False
    # the recognition head also reads the trunk's stride-4 stage (ResNetFPN's fine map): on the demo's
    # 96-px line a crack 1-2 px wide spans two stride-8 cells (benchmarks/results/unknowns.md)
    fine_recognition: bool = False
    # the normality memory's abnormal regions also join the proposals (True), or it only scores the
    # localizer's (False: on small training sets its regions outranked true boxes; unknowns.md)
    normality_proposals: bool = False
    score_thresh: float = 0.01
    # each localizer level's best this many proposals are kept ahead of the rest (0: by score alone)
    proposals_per_level: int = 0
    candidates: int = 1000
    proposal_nms: float = 0.6
    proposals: int = 50
    nms_thresh: float = 0.5
    detections: int = 100
    train_classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "detector config") -> DetectorConfig:
        """The config of ``values`` (a saved :meth:`to_dict`): a missing field takes
        :data:`MISSING_FIELD_DEFAULTS`' value, a removed option only the value it always had."""
        for key, value in REMOVED_OPTIONS.items():
            if key in values and values[key] != value:
                raise QuickstudyError(
                    f"{where}: was trained with the detector option {key}={values[key]!r}, which was removed; "
                    "train the model again"
                )
        known = {
            **MISSING_FIELD_DEFAULTS,
            **{k: v for k, v in values.items() if k in cls.__dataclass_fields__},
        }
        for key in ("widths", "depths", "size_bounds"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


# a config saved before one of these fields existed was trained with this value
MISSING_FIELD_DEFAULTS: dict[str, Any] = {
    "score_loss": "focal",
    "pseudo_label_confidence": None,
    "fine_recognition": False,
}
# options measurement rejected, with the value every config that still loads was trained with
REMOVED_OPTIONS: dict[str, Any] = {"box_tower": False}

TINY: dict[str, Any] = {
    "widths": (16, 32, 64, 128),
    "depths": (1, 1, 1, 1),
    "fpn_channels": 32,
    "embedding_dim": 32,
}
# Network sizes by name (``--arch``): "small" is the default (≥ 5x faster than RetinaNet-R50 on a
# 2-core CPU); "resnet18" takes torchvision's resnet18 weights (``--weights``).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": TINY,
    "small": {},
    "resnet18": {"widths": (64, 128, 256, 512), "fpn_channels": 128},
}


# An abnormal region's defect score is at most this: below what the localizer gives the defects it
# was taught, so on known types the localizer's boxes rank first (the overfit test's mAP50 fell from
# 1.0 to 0.5 when regions scored a / (1 + a)).
NORMALITY_SCALE = 0.5


def first_kept(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, count: int) -> torch.Tensor:
    """``nms(boxes, scores, iou_threshold)[:count]`` for ``scores`` sorted high to low, computed on
    the shortest prefix (4·count, 16·count, …) that keeps ``count`` boxes.

    Greedy NMS decides each box from the higher-scored boxes alone and torchvision sorts stably,
    so a prefix's kept boxes are exactly the whole list's kept boxes that lie in it. NMS costs
    about N² IoUs for N boxes that mostly survive; at inference 200 candidates instead of ~850.

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    >>> scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    >>> first_kept(boxes, scores, 0.5, 2).tolist(), nms(boxes, scores, 0.5)[:2].tolist()
    ([0, 2], [0, 2])
    """
    prefix = 4 * count
    while True:
        keep = nms(boxes[:prefix], scores[:prefix], iou_threshold)
        if keep.numel() >= count or prefix >= boxes.shape[0]:
            return keep[:count]
        prefix *= 4


def ranked_proposals(
    boxes: torch.Tensor,
    ranking: torch.Tensor,
    config: DetectorConfig,
    count: int,
    floor: float | None = None,
    levels: Sequence[int] = (),
) -> torch.Tensor:
    """Indices of the proposals kept from one image's ``boxes [P, 4]`` ranked by ``ranking [P]``: the
    ``config.candidates`` highest (those above ``floor`` where given), then the first ``count`` that
    NMS at ``config.proposal_nms`` keeps in that order (:func:`first_kept`).

    With ``config.proposals_per_level`` = n and ``levels`` (the number of locations of each level, in
    order), each level's first n kept within the level go ahead of the rest, so a coarse level's few
    large boxes are not crowded out by a fine level's many."""
    top = _candidates(ranking, config.candidates, floor)
    per_level = config.proposals_per_level
    if per_level and levels:
        reserved, start = [], 0
        for size in levels:
            level = start + _candidates(ranking[start : start + size], config.candidates, floor)
            reserved.append(level[first_kept(boxes[level], ranking[level], config.proposal_nms, per_level)])
            start += size
        ahead = torch.cat(reserved)
        ahead = ahead[ranking[ahead].argsort(descending=True, stable=True)]
        top = torch.cat([ahead, top[~torch.isin(top, ahead)]])
        # NMS in this order: ranks as scores (torchvision sorts by score)
        order = -torch.arange(top.numel(), dtype=torch.float32)
        return top[first_kept(boxes[top], order, config.proposal_nms, count)]
    return top[first_kept(boxes[top], ranking[top], config.proposal_nms, count)]


def _candidates(ranking: torch.Tensor, candidates: int, floor: float | None) -> torch.Tensor:
    """Indices of the ``candidates`` highest of ``ranking``, high to low, those above ``floor`` where given."""
    values, top = ranking.topk(min(candidates, ranking.numel()))
    return top if floor is None else top[values > floor]


class DefectDetector(nn.Module):
    """Detects defects of any type and names them by their nearest class prototype.

    >>> model = DefectDetector(["scratch", "pit"], DetectorConfig(**TINY)).eval()
    >>> out = model(torch.rand(1, 1, 64, 64))
    >>> sorted(out[0])
    ['boxes', 'defect_scores', 'embeddings', 'labels', 'max_similarity', 'scores', 'similarity']

    One row per (box, class) pair that survives per-class NMS: ``labels`` index ``model.classes``,
    ``scores`` = defect score × p(class), ``defect_scores`` the class-agnostic score of the box,
    ``similarity`` the cosine similarity of the box embedding to its label's prototype and
    ``max_similarity`` to the nearest prototype, on the scale of the unknown cut where a class has its
    own (:meth:`ClassMemory.nearest`; low = "unknown", see the Predictor).

    ``model.memory`` is the class memory that names boxes at inference: random prototypes until
    training calibrates it, a new row per class ``learn`` adds. It is data beside the network, not
    among its weights; the learned ``class_vectors`` are for training only. ``model.normality``
    (:class:`~quickstudy.detect.normality.NormalityMemory`, None until training builds it) adds the
    abnormal regions as proposals and an ``abnormality`` to every proposal and output row.

    ``model.learned_localize`` (None until ``learn`` adapts a localizer) is a second localization head,
    tuned on the types ``learn`` taught it, which are ``model.learned_classes``: their detections come
    from its proposals and every other class's from ``model.localize``'s, which ``learn`` never changes,
    so the types the detector was trained on are found as before (P3: benchmarks/results/unknowns.md).
    """

    def __init__(
        self, classes: Sequence[str], config: DetectorConfig | None = None, weights: str | None = None
    ) -> None:
        super().__init__()
        self.config = config = config or DetectorConfig()
        if not config.train_classes:
            config.train_classes = list(classes)
        self.backbone = ResNetFPN(
            config.widths,
            config.depths,
            config.fpn_channels,
            in_channels=config.channels,
            weights=weights,
            fine=config.fine_recognition,
        )
        self.localize = LocalizationHead(
            config.fpn_channels,
            config.head_convs,
            self.backbone.strides,
            center_radius=config.center_radius,
            size_ranges=tuple(
                zip((0.0, *config.size_bounds), (*config.size_bounds, float("inf")), strict=True)
            ),
            level_by=config.level_by,
            score_loss=config.score_loss,
        )
        self.recognize = RecognitionHead(
            config.fpn_channels, config.embedding_dim, strides=self.backbone.map_strides
        )
        self.class_vectors = nn.Parameter(torch.randn(len(config.train_classes), config.embedding_dim))
        self.memory = ClassMemory(
            classes, F.normalize(torch.randn(len(classes), config.embedding_dim), dim=-1)
        )
        self.normality: NormalityMemory | None = None
        self.learned_localize: LocalizationHead | None = None
        self.learned_classes: list[str] = []

    @property
    def classes(self) -> list[str]:
        """The names the class memory gives boxes (``labels`` index them)."""
        return self.memory.classes

    @property
    def device(self) -> torch.device:
        return self.class_vectors.device

    def add_learned_localize(self) -> LocalizationHead:
        """The learned types' localization head, a copy of ``localize`` where there is none yet."""
        if self.learned_localize is None:
            self.learned_localize = copy.deepcopy(self.localize)
        return self.learned_localize

    def set_learned_classes(self, names: Sequence[str]) -> None:
        """The classes whose detections come from the learned head (those of the class memory, in its
        order); none drops the head."""
        owned = set(names)
        self.learned_classes = [c for c in self.classes if c in owned]
        if not self.learned_classes:
            self.learned_localize = None

    def proposing_heads(self, features: list[torch.Tensor], dense: dict[str, torch.Tensor]) -> list[dict]:
        """The dense outputs of every localization head on ``features``: ``dense`` (the base head's),
        then the learned head's where there is one."""
        learned = [] if self.learned_localize is None else [self.learned_localize(features)]
        return [dense, *learned]

    def owned(self, head: torch.Tensor) -> torch.Tensor:
        """``[N, C]``: whether proposal i (from head ``head[i]``: 0 base, 1 learned) may be named class c."""
        learned = torch.tensor([c in self.learned_classes for c in self.classes], device=head.device)
        return (head[:, None] == 1) == learned[None, :]

    # -- forward --------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The pyramid's maps (strides 8, 16, 32), then the fine map (stride 4) where the config has one."""
        return list(self.backbone((images - 0.5) / 0.25).values())

    def forward(
        self, images: torch.Tensor, targets: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Training (``targets`` given): ``boxes [B, M, 4]``, ``valid [B, M]``, ``rois [K, 5]``,
        ``roi_allowed [K, C]``, ``roi_support [K]`` (and optionally ``roi_unnamed [K]``: boxes never
        pseudo-labelled, and kept far from every class) → ``loss_localize``, ``loss_recognize`` and parts."""
        features = self.features(images)
        dense = self.localize(features)
        if targets is None:
            return self.postprocess(features, dense, images.shape[-2:])
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        localize = self.localize.compute_loss(dense, sizes, targets["boxes"], targets["valid"])
        embeddings = self.recognize.embed(features, targets["rois"])
        recognize = self.recognize.compute_loss(
            embeddings,
            targets["roi_allowed"],
            self.class_vectors,
            targets["roi_support"],
            self.config.pseudo_label_confidence,
            targets.get("roi_unnamed"),
        )
        return {
            "loss_localize": torch.stack(list(localize.values())).sum(),
            "loss_recognize": (recognize["loss_classes"] + recognize["loss_episode"]) / 2
            + recognize["loss_unnamed"],
            **localize,
            **recognize,
        }

    def pool_boxes(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """What the recognition MLP reads of given boxes (pixels of ``images``), ``[Σ N_i, C, P, P]``."""
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)]).to(
            images.device
        )
        return self.recognize.pool(self.features(images), rois)

    def embed_boxes(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Embeddings ``[Σ N_i, D]`` of given boxes (pixels of ``images``), e.g. support boxes."""
        return self.recognize.project(self.pool_boxes(images, boxes))

    @torch.no_grad()
    def postprocess(
        self, features: list[torch.Tensor], dense: dict[str, torch.Tensor], image_size: Sequence[int]
    ) -> list[dict[str, torch.Tensor]]:
        """:meth:`propose` then :meth:`classify`. One dict per image."""
        return self.classify(self.propose(features, dense, image_size))

    @torch.no_grad()
    def dense_boxes(
        self, features: list[torch.Tensor], dense: dict[str, torch.Tensor], image_size: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every location's box ``[B, P, 4]`` (within ``image_size`` (h, w)) and defect score ``[B, P]``,
        locations in :meth:`~quickstudy.detect.localization.LocalizationHead.points` order: what
        :meth:`propose` picks its proposals from."""
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        points = self.localize.points(sizes, dense["logits"].device)
        scores = torch.sqrt(dense["logits"].float().sigmoid() * dense["centerness"].float().sigmoid())
        boxes = self.localize.decode(points, dense["distances"].float())
        h, w = image_size
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
        return boxes, scores

    @torch.no_grad()
    def propose(
        self, features: list[torch.Tensor], dense: dict[str, torch.Tensor], image_size: Sequence[int]
    ) -> list[dict[str, torch.Tensor]]:
        """Class-agnostic proposals per image (:func:`ranked_proposals`) → ``boxes``, ``defect_scores``,
        ``embeddings``, and ``head``: which localization head proposed each (0 ``localize``, 1
        ``learned_localize``; each head's proposals are ranked apart). They do not depend on the class
        memory, so one pass serves any prototypes.

        With a normality memory, its abnormal regions join the base head's proposals (defect score
        :data:`NORMALITY_SCALE` · a / (1 + a) for abnormality a) and every proposal carries its
        ``abnormality``."""
        cfg = self.config
        levels = self.localize.level_sizes([(f.shape[-2], f.shape[-1]) for f in features])
        heads = [self.dense_boxes(features, d, image_size) for d in self.proposing_heads(features, dense)]
        h, w = image_size
        normality = self.normality
        abnormal_maps = normality.score_map(features) if normality is not None else None
        results = []
        for i in range(features[0].shape[0]):
            boxes, scores, head = [], [], []
            for index, (head_boxes, head_scores) in enumerate(heads):
                chosen = ranked_proposals(
                    head_boxes[i], head_scores[i], cfg, cfg.proposals, cfg.score_thresh, levels
                )
                boxes.append(head_boxes[i, chosen])
                scores.append(head_scores[i, chosen])
                head.append(torch.full((chosen.numel(),), index, dtype=torch.long, device=chosen.device))
            result = {"boxes": torch.cat(boxes), "defect_scores": torch.cat(scores), "head": torch.cat(head)}
            if normality is not None and abnormal_maps is not None:
                result["abnormality"] = normality.box_abnormality(abnormal_maps[i], result["boxes"])
                if cfg.normality_proposals:
                    regions, peaks = normality.regions(abnormal_maps[i], (h, w))
                    region_scores = (NORMALITY_SCALE * peaks / (1 + peaks)).to(result["defect_scores"])
                    for key, values in (
                        ("abnormality", peaks),
                        ("boxes", regions.to(result["boxes"])),
                        ("defect_scores", region_scores),
                        ("head", torch.zeros(len(peaks), dtype=torch.long, device=result["head"].device)),
                    ):
                        result[key] = torch.cat([result[key], values])
            results.append(result)
        rois = torch.cat(
            [torch.cat([torch.full_like(r["boxes"][:, :1], i), r["boxes"]], 1) for i, r in enumerate(results)]
        )
        embeddings = self.recognize.embed(features, rois).split([r["boxes"].shape[0] for r in results])
        for result, values in zip(results, embeddings, strict=True):
            result["embeddings"] = values
        return results

    @torch.no_grad()
    def classify(self, proposals: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """(box, class) pairs scored defect × p(class | prototypes) → per-class NMS, per image; a
        proposal is named only as the classes its head owns (:meth:`owned`)."""
        cfg = self.config
        scale = self.recognize.log_scale.exp()
        results = []
        for proposal in proposals:
            boxes, defect, embeddings = proposal["boxes"], proposal["defect_scores"], proposal["embeddings"]
            similarity = self.memory.similarity(embeddings)  # [N, C] cosines
            pair_scores = defect[:, None] * (scale.to(embeddings.device) * similarity).softmax(-1)
            pair_scores = pair_scores * self.owned(proposal["head"])
            box_index, label = torch.nonzero(pair_scores > cfg.score_thresh, as_tuple=True)
            pair = pair_scores[box_index, label]
            keep = batched_nms(boxes[box_index], pair, label, cfg.nms_thresh)[: cfg.detections]
            box_index, label = box_index[keep], label[keep]
            result = {
                "boxes": boxes[box_index],
                "scores": pair[keep],
                "labels": label,
                "embeddings": embeddings[box_index],
                "similarity": similarity[box_index, label],
                "max_similarity": self.memory.nearest(similarity[box_index]),
                "defect_scores": defect[box_index],
            }
            if "abnormality" in proposal:
                result["abnormality"] = proposal["abnormality"][box_index]
            results.append(result)
        return results


def detector_payload(model: DefectDetector, **meta: Any) -> dict[str, Any]:
    """A checkpoint payload of ``model`` and its class memory, plus ``meta`` (note, train, ...).

    The layout every model folder has used: the class names and thresholds at the top, the
    prototypes among the network's tensors; the normality memory, where there is one, under
    ``normality``; the learned head's classes, where it has one, under ``learned_classes``."""
    memory = model.memory.to_payload()
    normality = {"normality": model.normality.to_payload()} if model.normality is not None else {}
    learned = {"learned_classes": list(model.learned_classes)} if model.learned_localize is not None else {}
    return {
        **normality,
        **learned,
        "config": model.config.to_dict(),
        "classes": memory["classes"],
        "model": {
            **{k: v.detach().cpu() for k, v in model.state_dict().items()},
            "prototypes": memory["prototypes"],
        },
        "thresholds": memory["thresholds"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }


def detector_from_payload(
    payload: Mapping[str, Any], device: str | torch.device = "cpu", where: str | os.PathLike[str] = "model"
) -> DefectDetector:
    """Rebuild the network, its class memory and its normality memory (a model saved without one has
    none) from a :func:`detector_payload`; errors name ``where``."""
    weights = dict(payload["model"])
    memory = ClassMemory.from_payload(
        {
            "classes": payload.get("classes"),
            "prototypes": weights.pop("prototypes", None),
            "thresholds": payload.get("thresholds"),
        },
        str(where),
    )
    model = DefectDetector(memory.classes, DetectorConfig.from_dict(payload["config"], str(where)))
    learned = payload.get("learned_classes")
    if learned is not None:
        if not isinstance(learned, list) or not learned or not all(c in memory.classes for c in learned):
            raise QuickstudyError(
                f"{where}: learned_classes {learned!r} is not a list of some of its classes {memory.classes}"
            )
        model.add_learned_localize()
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as error:  # torch lists every key on lines of their own
        detail = " ".join(str(error).split())
        raise QuickstudyError(
            f"{where}: its weights do not fit the network its config describes ({detail[:300]})"
        ) from None
    model.memory = memory
    if learned is not None:
        model.set_learned_classes(learned)
    if payload.get("normality") is not None:
        model.normality = NormalityMemory.from_payload(payload["normality"], f"{where}: normality")
    return model.to(device).eval()
