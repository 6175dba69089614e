"""The localization task: a dense, class-agnostic "defect here" score and box regression (FCOS-style).

Every feature-map location of every pyramid level predicts a defect logit, the distances
(left, top, right, bottom) to the edges of the box it lies in, and a centre-ness logit. Training
targets follow FCOS (Tian et al. 2019): a location is positive for the smallest ground-truth box
that holds it within ``center_radius`` strides of the box centre and whose size falls in the
level's size range — FCOS's largest edge distance (``level_by="reach"``) or the box's half-size
sqrt(w·h)/2 (``"area"``, which keeps thin boxes on a grid fine enough to have locations inside
them). A box no location qualifies for learns at the location inside it nearest its centre. Per box, a
centre share can widen "near the centre" along an elongated box's long side (``learn`` does so for a new
type's support boxes, so a long defect's middle learns its whole box).
Anchor-free, so nothing to tune per dataset, and it trains fast from random init.

Losses: for the scores the quality focal loss of GFL (Li et al. 2020), whose target at a positive
is the IoU of the box predicted there (``score_loss="quality"``), or FCOS's sigmoid focal loss
against 1 (``"focal"``); GIoU for the boxes, weighted by centre-ness; BCE for the centre-ness.
All targets are computed for the whole batch at once on padded boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_area, generalized_box_iou_loss, sigmoid_focal_loss

INF = float("inf")
# a box this many times longer than wide is elongated: a share of it reaches along its long side
ELONGATED = 3.0


def _conv_gn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(min(32, channels // 4), channels), nn.ReLU()
    )


class LocalizationHead(nn.Module):
    """One conv tower shared over pyramid levels → defect logit, box distances, centre-ness logit.

    >>> head = LocalizationHead(16)
    >>> out = head([torch.zeros(2, 16, 8, 8), torch.zeros(2, 16, 4, 4), torch.zeros(2, 16, 2, 2)])
    >>> out["logits"].shape, out["distances"].shape, head.points([(8, 8), (4, 4), (2, 2)]).shape
    (torch.Size([2, 84]), torch.Size([2, 84, 4]), torch.Size([84, 2]))
    """

    def __init__(
        self,
        in_channels: int,
        num_convs: int = 2,
        strides: Sequence[int] = (8, 16, 32),
        size_ranges: Sequence[tuple[float, float]] = ((0.0, 64.0), (64.0, 128.0), (128.0, INF)),
        center_radius: float = 1.5,
        prior_probability: float = 0.01,
        level_by: str = "reach",
        score_loss: str = "focal",
    ) -> None:
        super().__init__()
        self.tower = nn.Sequential(*[_conv_gn_relu(in_channels) for _ in range(num_convs)])
        self.score = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.box = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        for layer in (self.score, self.box, self.centerness):
            nn.init.normal_(layer.weight, std=0.01)
        # RetinaNet's prior: start with p(defect) = 0.01 everywhere so the focal loss starts stable.
        prior_bias = -math.log((1 - prior_probability) / prior_probability)
        for layer, bias in ((self.score, prior_bias), (self.box, 0.0), (self.centerness, 0.0)):
            assert layer.bias is not None
            nn.init.constant_(layer.bias, bias)
        self.strides = tuple(strides)
        self.size_ranges = tuple(size_ranges)
        self.center_radius = center_radius
        if level_by not in ("reach", "area"):
            raise ValueError(f"level_by {level_by!r}: choose reach or area")
        self.level_by = level_by
        if score_loss not in ("focal", "quality"):
            raise ValueError(f"score_loss {score_loss!r}: choose focal or quality")
        self.score_loss = score_loss

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per level outputs flattened and concatenated: ``logits [B, P]``, ``distances [B, P, 4]``
        (pixels, ≥ 0), ``centerness [B, P]``; P = Σ H_l·W_l in row-major order per level. Maps after
        its levels (the backbone's fine map, for recognition) are not read."""
        logits, distances, centerness = [], [], []
        for feature, stride in zip(features[: len(self.strides)], self.strides, strict=True):
            x = self.tower(feature)
            logits.append(self.score(x).flatten(1))
            # softplus, not relu: no dead outputs early in training from random init
            distances.append((F.softplus(self.box(x)) * stride).flatten(2).transpose(1, 2))
            centerness.append(self.centerness(x).flatten(1))
        return {
            "logits": torch.cat(logits, 1),
            "distances": torch.cat(distances, 1),
            "centerness": torch.cat(centerness, 1),
        }

    def points(self, sizes: Sequence[tuple[int, int]], device: torch.device | None = None) -> torch.Tensor:
        """Image-space centres ``[P, 2]`` (x, y) of all locations, in the order of ``forward``."""
        return self._point_table(sizes, device)[0]

    def level_sizes(self, sizes: Sequence[tuple[int, int]]) -> list[int]:
        """The number of locations of each level, in the order of :meth:`points`."""
        return [h * w for h, w in sizes[: len(self.strides)]]

    def _point_table(
        self, sizes: Sequence[tuple[int, int]], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points, strides, ranges = [], [], []
        for size, stride, size_range in zip(
            sizes[: len(self.strides)], self.strides, self.size_ranges, strict=True
        ):
            h, w = size
            ys, xs = torch.meshgrid(
                torch.arange(h, device=device, dtype=torch.float32),
                torch.arange(w, device=device, dtype=torch.float32),
                indexing="ij",
            )
            points.append(torch.stack([xs.flatten(), ys.flatten()], 1).add_(0.5).mul_(stride))
            strides.append(torch.full((h * w,), float(stride), device=device))
            ranges.append(torch.tensor(size_range, device=device).expand(h * w, 2))
        return torch.cat(points), torch.cat(strides), torch.cat(ranges)

    @staticmethod
    def decode(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """Boxes ``[..., 4]`` xyxy from points ``[P, 2]`` and distances ``[..., P, 4]`` (l, t, r, b)."""
        return torch.cat([points - distances[..., :2], points + distances[..., 2:]], -1)

    def assign(
        self,
        sizes: Sequence[tuple[int, int]],
        gt_boxes: torch.Tensor,
        gt_valid: torch.Tensor,
        center_share: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FCOS targets for a padded batch: ``gt_boxes [B, M, 4]``, ``gt_valid [B, M]`` →
        (positive ``[B, P]`` bool, matched box ``[B, P, 4]``, points ``[P, 2]``). ``center_share [B, M]``:
        along an elongated box's long side, locations within this share of its half-length of its centre
        are near it too (where wider than ``center_radius`` strides)."""
        points, strides, ranges = self._point_table(sizes, gt_boxes.device)
        px, py = points[None, :, None, 0], points[None, :, None, 1]  # [1, P, 1]
        x1, y1, x2, y2 = (gt_boxes[:, None, :, i] for i in range(4))  # [B, 1, M]
        edges = torch.stack([px - x1, py - y1, x2 - px, y2 - py], -1)  # [B, P, M, 4]
        inside = edges.amin(-1) > 0
        rx = ry = strides[None, :, None] * self.center_radius
        if center_share is not None:
            w, h, share = x2 - x1, y2 - y1, center_share[:, None, :]
            rx = torch.where(w >= ELONGATED * h, torch.maximum(rx, share * w / 2), rx)
            ry = torch.where(h >= ELONGATED * w, torch.maximum(ry, share * h / 2), ry)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        near_center = (
            (px > torch.maximum(cx - rx, x1))
            & (px < torch.minimum(cx + rx, x2))
            & (py > torch.maximum(cy - ry, y1))
            & (py < torch.minimum(cy + ry, y2))
        )
        # the level is chosen by how far a location's farthest edge lies (FCOS), or by the box's own
        # half-size sqrt(w·h)/2 (the same for all its locations; a thin box stays on a fine level)
        if self.level_by == "area":
            size = ((x2 - x1) * (y2 - y1)).clamp(min=0).sqrt().div(2)  # [B, 1, M], broadcast
        else:
            size = edges.amax(-1)
        in_range = (size >= ranges[None, :, None, 0]) & (size <= ranges[None, :, None, 1])
        candidate = inside & near_center & in_range & gt_valid[:, None, :]
        # a box no location qualifies for (thin boxes between the coarse levels' grid points) learns
        # at the location inside it nearest its centre, so that no box goes untrained
        lonely = ~candidate.any(1) & gt_valid  # [B, M]
        if lonely.any():
            distance = (px - cx) ** 2 + (py - cy) ** 2  # [B, P, M]
            nearest = distance.masked_fill(~inside, INF).argmin(1, keepdim=True)  # [B, 1, M]
            fallback = torch.zeros_like(candidate).scatter_(1, nearest, lonely[:, None, :])
            candidate |= fallback & inside
        area = ((x2 - x1) * (y2 - y1)).expand_as(candidate).masked_fill(~candidate, INF)
        best_area, best = area.min(-1)  # the smallest box wins where boxes overlap
        positive = torch.isfinite(best_area)
        matched = gt_boxes.gather(1, best[..., None].expand(-1, -1, 4))
        return positive, matched, points

    def compute_loss(
        self,
        outputs: dict[str, torch.Tensor],
        sizes: Sequence[tuple[int, int]],
        gt_boxes: torch.Tensor,
        gt_valid: torch.Tensor,
        center_share: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_score`` (focal or quality focal, per positive), ``loss_box`` (GIoU),
        ``loss_centerness`` (BCE); ``center_share``: :meth:`assign`'s."""
        positive, matched, points = self.assign(sizes, gt_boxes, gt_valid, center_share)
        logits = outputs["logits"].float()
        distances = outputs["distances"].float()[positive]
        pos_points = points.expand(positive.shape[0], -1, -1)[positive]
        target = matched[positive]
        predicted = self.decode(pos_points, distances)
        num_positive = positive.sum().clamp(min=1).float()
        if self.score_loss == "quality":
            # quality focal loss (GFL, Li et al. 2020): a positive's score learns the IoU of its own
            # box, so a fragment or loose box predicted at a positive ranks below a tight one
            quality = torch.zeros_like(logits)
            quality[positive] = elementwise_iou(predicted.detach(), target)
            modulator = (logits.sigmoid() - quality).abs().pow(2)
            bce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
            loss_score = (bce * modulator).sum() / num_positive
        else:
            loss_score = sigmoid_focal_loss(logits, positive.float(), reduction="sum") / num_positive
        if not positive.any():
            zero = outputs["distances"].sum() * 0 + outputs["centerness"].sum() * 0
            return {"loss_score": loss_score, "loss_box": zero, "loss_centerness": zero}
        edges = torch.cat([pos_points - target[:, :2], target[:, 2:] - pos_points], -1)
        lr, tb = edges[:, [0, 2]], edges[:, [1, 3]]
        centerness = torch.sqrt(
            (lr.amin(-1) / lr.amax(-1)).clamp(min=0) * (tb.amin(-1) / tb.amax(-1)).clamp(min=0)
        )
        giou = generalized_box_iou_loss(predicted, target, reduction="none")
        loss_box = (giou * centerness).sum() / centerness.sum().clamp(min=1e-6)
        loss_centerness = F.binary_cross_entropy_with_logits(
            outputs["centerness"].float()[positive], centerness, reduction="mean"
        )
        return {"loss_score": loss_score, "loss_box": loss_box, "loss_centerness": loss_centerness}


def elementwise_iou(boxes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """IoU of each box ``[N, 4]`` (xyxy) with the box in the same row of ``other``.

    >>> elementwise_iou(torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]]), torch.tensor([[1.0, 0, 3, 2], [0, 0, 1, 1]]))
    tensor([0.3333, 1.0000])
    """
    top_left = torch.maximum(boxes[:, :2], other[:, :2])
    bottom_right = torch.minimum(boxes[:, 2:], other[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(boxes) + box_area(other) - intersection
    return intersection / union.clamp(min=1e-6)
