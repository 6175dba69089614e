"""The normality task: how far each location of an image lies from normal surface.

A memory, not a trained head, so no loss joins the detector's multi-task training: after training,
the stride-16 FPN features of every location outside all boxes of the checked training images (every
location of a checked defect-free image) are L2-normalised, sampled evenly over the images and
reduced by greedy coreset selection (PatchCore, Roth et al. 2022) to at most :data:`MEMORY_SIZE`
vectors. A location's abnormality is its distance to the nearest vector of the memory divided by a
threshold calibrated on held-out normal regions, so 1 is the edge of normal.

Connected regions above 1 are class-agnostic proposals beside the localizer's (:meth:`NormalityMemory.regions`),
and every proposal carries the highest abnormality inside it (:meth:`NormalityMemory.box_abnormality`):
a box is ``unknown`` only where it is abnormal as well as far from every prototype.

>>> memory = NormalityMemory(torch.eye(2), threshold=0.5)
>>> features = [torch.tensor([[[[1.0, 0.0]], [[0.0, -1.0]]]])]  # [1, 2, 1, 2]: two locations
>>> memory.score_map(features)
tensor([[[0.0000, 2.8284]]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from quickstudy.errors import QuickstudyError

# At most this many normal patch vectors are kept: the nearest-neighbour search over them is the
# normality task's whole inference cost (169 locations x 4096 x 96 multiply-adds on a 200 px image).
MEMORY_SIZE = 4096
# The FPN level (stride 16): on the synthetic line its distances separated defect from clean regions
# more often than stride 8's (benchmarks/results/unknowns.md).
NORMALITY_LEVEL = 1
# A location within this many strides of a box is neither normal nor held-out normal: its
# receptive field sees the defect.
BOX_MARGIN = 1
# The threshold lets this share of held-out normal images hold an abnormal location.
NORMAL_IMAGE_QUANTILE = 0.95
# At most this many abnormal regions per image become proposals (the most abnormal first).
MAX_REGIONS = 20


class NormalityMemory:
    """Unit normal patch vectors ``[M, C]`` of FPN level ``level`` (stride ``stride``) and the distance
    ``threshold`` at which a location stops being normal."""

    def __init__(self, vectors: torch.Tensor, threshold: float, level: int = 0, stride: int = 8) -> None:
        if vectors.dim() != 2 or vectors.shape[0] == 0:
            raise ValueError(f"normal vectors must be a non-empty [M, C] matrix, got {tuple(vectors.shape)}")
        if not threshold > 0:
            raise ValueError(f"the normality threshold must be positive, got {threshold}")
        rows = vectors.detach().float().cpu()
        norms = rows.norm(dim=-1, keepdim=True)
        # unit rows kept bit for bit, so a saved memory loads exactly as it was
        self.vectors = torch.where((norms - 1).abs() <= 1e-6, rows, rows / norms.clamp(min=1e-12))
        self.threshold = float(threshold)
        self.level = int(level)
        self.stride = int(stride)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def distances(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Distance ``[B, H, W]`` of each location of level :attr:`level` to its nearest normal vector."""
        level = features[self.level].float()
        b, c, h, w = level.shape
        patches = F.normalize(level.permute(0, 2, 3, 1).reshape(-1, c), dim=-1)
        nearest = (patches @ self.vectors.to(patches.device).T).amax(-1)
        return (2 - 2 * nearest).clamp(min=0).sqrt().view(b, h, w)

    def score_map(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Abnormality ``[B, H, W]``: :meth:`distances` over :attr:`threshold` (1: the edge of normal)."""
        return self.distances(features) / self.threshold

    def box_abnormality(self, scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The highest abnormality ``[N]`` of one image's map ``scores [H, W]`` over the locations whose
        centres lie in each box (pixels); a box smaller than a cell reads the cell at its centre."""
        h, w = scores.shape
        if boxes.shape[0] == 0:
            return scores.new_zeros(0)
        s = self.stride
        ys = (torch.arange(h, device=scores.device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=scores.device, dtype=torch.float32) + 0.5) * s
        inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])  # [N, W]
        inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])  # [N, H]
        inside = inside_y[:, :, None] & inside_x[:, None, :]  # [N, H, W]
        best = torch.where(inside, scores[None], torch.full_like(scores, -1.0)[None]).amax((1, 2))
        cx = ((boxes[:, 0] + boxes[:, 2]) / 2 / s).long().clamp(0, w - 1)
        cy = ((boxes[:, 1] + boxes[:, 3]) / 2 / s).long().clamp(0, h - 1)
        return torch.where(inside.flatten(1).any(1), best, scores[cy, cx])

    def regions(self, scores: torch.Tensor, image_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``[R, 4]`` (pixels, within ``image_size`` (h, w)) around the 8-connected regions of one
        image's map ``scores [H, W]`` at or above 1, and each region's highest abnormality ``[R]``;
        the :data:`MAX_REGIONS` most abnormal."""
        array = scores.detach().float().cpu().numpy()
        labels, count = ndimage.label(array >= 1.0, structure=np.ones((3, 3)))
        if count == 0:
            return scores.new_zeros(0, 4), scores.new_zeros(0)
        peaks = np.asarray(ndimage.maximum(array, labels, np.arange(1, count + 1)), dtype=np.float32)
        s, (h, w) = self.stride, image_size
        boxes = [
            (cols.start * s, rows.start * s, min(cols.stop * s, w), min(rows.stop * s, h))
            for rows, cols in ndimage.find_objects(labels)
        ]
        order = np.argsort(-peaks, kind="stable")[:MAX_REGIONS]
        found = torch.tensor([boxes[i] for i in order], dtype=torch.float32)
        return found.to(scores.device), torch.from_numpy(peaks[order]).to(scores.device)

    # -- plain data -------------------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """``{"vectors": Tensor [M, C], "threshold": float, "level": int, "stride": int}``."""
        return {
            "vectors": self.vectors.clone(),
            "threshold": self.threshold,
            "level": self.level,
            "stride": self.stride,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], where: str = "normality memory") -> NormalityMemory:
        """The memory :meth:`to_payload` wrote; :class:`QuickstudyError` naming ``where`` if it is not one."""
        vectors = payload.get("vectors")
        if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
            raise QuickstudyError(f"{where}: the normal vectors are not a float tensor")
        numbers = {key: payload.get(key) for key in ("threshold", "level", "stride")}
        bad = [
            key
            for key, value in numbers.items()
            if not isinstance(value, int | float) or isinstance(value, bool)
        ]
        if bad:
            raise QuickstudyError(f"{where}: the normality {', '.join(bad)} is not a number")
        try:
            return cls(vectors, float(numbers["threshold"]), int(numbers["level"]), int(numbers["stride"]))  # type: ignore[arg-type]
        except ValueError as error:
            raise QuickstudyError(f"{where}: {error}") from None


def normal_cells(
    boxes: torch.Tensor, shape: Sequence[int], stride: int, margin: int = BOX_MARGIN
) -> torch.Tensor:
    """Bool ``[H, W]``: the cells of a stride-``stride`` grid whose square, widened by ``margin`` cells,
    touches none of ``boxes [M, 4]`` (pixels)."""
    h, w = shape
    edges_y = torch.arange(h, dtype=torch.float32) * stride
    edges_x = torch.arange(w, dtype=torch.float32) * stride
    pad = margin * stride
    near = torch.zeros(h, w, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.tolist():
        rows = (edges_y + stride + pad > y1) & (edges_y - pad < y2)
        cols = (edges_x + stride + pad > x1) & (edges_x - pad < x2)
        near |= rows[:, None] & cols[None, :]
    return ~near


def greedy_coreset(vectors: torch.Tensor, size: int) -> torch.Tensor:
    """The indices of ``size`` rows of unit ``vectors [N, C]`` picked by greedy k-centre selection (first
    the row farthest from their mean, then each the row farthest from those already picked), so rare
    normal patterns stay covered; all rows when there are no more than ``size``.

    >>> greedy_coreset(torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]]), 2).tolist()
    [2, 0]
    """
    n = vectors.shape[0]
    if n <= size:
        return torch.arange(n)
    first = int((vectors @ F.normalize(vectors.mean(0), dim=0)).argmin())
    chosen = [first]
    nearest = 2 - 2 * vectors @ vectors[first]
    for _ in range(size - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, 2 - 2 * vectors @ vectors[pick])
    return torch.tensor(chosen)


def normal_threshold(image_maxima: torch.Tensor) -> float:
    """The distance threshold from each held-out image's largest distance over its normal locations:
    their :data:`NORMAL_IMAGE_QUANTILE` quantile."""
    return float(torch.quantile(image_maxima.float(), NORMAL_IMAGE_QUANTILE))
