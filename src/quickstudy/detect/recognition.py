"""The recognition task: an embedding per box, classified by scaled cosine similarity to prototypes.

A box's class label may be a *set* S of allowed classes (after a taxonomy split, S = {A1, A2});
its loss is ``-log Σ_{c∈S} p(c | box)`` (:func:`partial_label_loss`), which is the usual
cross-entropy when |S| = 1 and adds nothing when S is empty (a box without class).

The head is trained two ways at once: against learned class vectors (one row per training
class), and episodically — prototypes are the mean embeddings of a random half of the batch's
single-label boxes (the support) and the other boxes are classified against them — because at
``learn`` time a new class is exactly such a mean of K support embeddings. A box without class may
also learn, both ways, the class it is confidently predicted as against the class vectors
(:func:`pseudo_labels`, the detector's ``pseudo_label_confidence``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from quickstudy.detect.memory import UNKNOWN_QUANTILE


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a non-empty allowed set of ``-log Σ_{c∈S} softmax(logits)_c``.

    ``logits [N, C]``, ``allowed [N, C]`` bool. Rows whose S is empty are skipped; with no such
    row at all the result is a zero that is still connected to ``logits`` (so backward works).

    >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> one = partial_label_loss(logits, torch.tensor([[True, False, False]]))
    >>> torch.allclose(one, F.cross_entropy(logits, torch.tensor([0])))
    True
    """
    rows = allowed.any(-1)
    if not rows.any():
        return logits.sum() * 0
    log_p = F.log_softmax(logits[rows].float(), -1)
    return -torch.logsumexp(log_p.masked_fill(~allowed[rows], -math.inf), -1).mean()


def open_set_cut(logits: torch.Tensor, allowed: torch.Tensor) -> float:
    """The in-batch form of the open-set test (the class memory's calibrated one exists only after
    training): the :data:`UNKNOWN_QUANTILE` quantile of the single-label boxes' logits for their own
    class; -inf when the batch has none.

    >>> open_set_cut(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([[True, False], [False, True]]))
    1.0
    """
    single = allowed.sum(-1) == 1
    own = logits.detach().float()[single][allowed[single]]
    return float(torch.quantile(own, UNKNOWN_QUANTILE, interpolation="lower")) if own.numel() else -math.inf


def unnamed_loss(logits: torch.Tensor, allowed: torch.Tensor, unnamed: torch.Tensor | None) -> torch.Tensor:
    """Mean over the boxes flagged ``unnamed [N]`` of ``softplus(max_c logit - cut)``, ``cut`` the
    batch's :func:`open_set_cut`: a box of a type no class names is pushed below how near known boxes
    are to their own class, which is where the open-set test calls a box ``unknown`` (in the spirit of
    outlier exposure, Hendrycks et al. 2019, with real outliers rather than another dataset). Zero,
    still connected to ``logits``, when no box is flagged or the batch has no single-label box.

    >>> logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [4.0, 0.0]], requires_grad=True)
    >>> allowed = torch.tensor([[True, False], [False, True], [False, False]])
    >>> loss = unnamed_loss(logits, allowed, torch.tensor([False, False, True]))
    >>> round(float(loss.detach()), 3)
    0.313
    >>> loss.backward(); logits.grad[2].tolist()
    [0.2689414322376251, 0.0]
    """
    cut = open_set_cut(logits, allowed)
    if unnamed is None or not unnamed.any() or cut == -math.inf:
        return logits.sum() * 0
    return F.softplus(logits[unnamed].float().amax(-1) - cut).mean()


def pseudo_labels(
    logits: torch.Tensor, allowed: torch.Tensor, confidence: float, unnamed: torch.Tensor | None = None
) -> torch.Tensor:
    """``allowed`` with each row whose S is empty given its most probable class where that class's
    probability is at least ``confidence`` (self-training, as FixMatch thresholds its pseudo-labels)
    and the box passes the open-set test: its best logit reaches the :data:`UNKNOWN_QUANTILE` quantile
    of the batch's single-label boxes' logits for their own class. A softmax is sure of things it never
    saw; a box farther from every class than known boxes are from their own may be of a type not yet
    named, and is never pseudo-labelled (every box is a defect, so "abnormal" holds for all of them).
    Nor is a box flagged in ``unnamed [N]`` (its class was retired as a type no class names): it is
    known to be none of them, however sure the softmax is.

    >>> logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [4.0, 1.0], [3.0, -9.0], [5.0, 0.0]])
    >>> allowed = torch.tensor([[False, False], [False, False], [True, False], [False, False], [False, False]])
    >>> pseudo_labels(logits, allowed, 0.9, torch.tensor([False, False, False, False, True])).tolist()
    [[True, False], [False, False], [True, False], [False, False], [False, False]]
    """
    scores = logits.detach().float()
    best = scores.softmax(-1).max(-1)
    far = scores.amax(-1) < open_set_cut(scores, allowed)
    take = ~allowed.any(-1) & (best.values >= confidence) & ~far
    if unnamed is not None:
        take &= ~unnamed
    return allowed | (F.one_hot(best.indices, allowed.shape[-1]).bool() & take[:, None])


def bin_weights(
    rois: torch.Tensor,
    heights: Sequence[int],
    widths: Sequence[int],
    strides: Sequence[int],
    output_size: int,
    sampling_ratio: int,
) -> torch.Tensor:
    """RoIAlign's interpolation weights, one axis at a time: ``[2, K, output_size, Σ lengths]``, the
    y weights of each box's bins over the rows of all levels side by side (level l's rows start
    after all earlier levels' rows), then the x weights over the columns, zero-padded to the longer
    of Σ heights and Σ widths. Follows torchvision's ``roi_align(aligned=True)`` sample by sample:
    a sample farther than one cell outside the map counts zero, one before the first row or past
    the last is clamped to it."""
    device = rois.device
    lengths = torch.tensor([list(heights), list(widths)], dtype=torch.float32, device=device)  # [2, L]
    scale = 1.0 / torch.tensor(strides, dtype=torch.float32, device=device)  # [L]
    box = rois[:, 1:].float()
    start = torch.stack([box[:, 1], box[:, 0]])[:, None, :] * scale[:, None] - 0.5  # [2, L, K]
    extent = torch.stack([box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]])[:, None, :] * scale[:, None]
    bin_size = (extent / output_size)[..., None, None]  # [2, L, K, 1, 1]
    bins = torch.arange(output_size, dtype=torch.float32, device=device)[:, None]
    samples = torch.arange(sampling_ratio, dtype=torch.float32, device=device)[None, :] + 0.5
    position = (
        start[..., None, None] + bins * bin_size + samples * bin_size / sampling_ratio
    )  # [2, L, K, P, S]
    length = lengths[:, :, None, None, None]
    valid = (position >= -1.0) & (position <= length)
    position = position.clamp(min=0)
    low = position.floor().minimum(length - 1)
    high = (low + 1).minimum(length - 1)
    fraction = (position - low).masked_fill(low >= length - 1, 0.0)
    weight = torch.stack([1 - fraction, fraction], -1) * valid[..., None] / sampling_ratio
    offsets = (lengths.cumsum(1) - lengths)[:, :, None, None, None, None]
    column = (torch.stack([low, high], -1) + offsets).long()  # [2, L, K, P, S, 2]
    # every level's samples of a bin add into one row: its weights over all levels' rows (columns)
    shape = (2, rois.shape[0], output_size, len(heights) * sampling_ratio * 2)
    column = column.permute(0, 2, 3, 1, 4, 5).reshape(shape)
    weight = weight.permute(0, 2, 3, 1, 4, 5).reshape(shape)
    width = max(sum(heights), sum(widths))
    return torch.zeros(*shape[:3], width, device=device).scatter_add_(-1, column, weight)


def pyramid_roi_align(
    features: Sequence[torch.Tensor],
    rois: torch.Tensor,
    strides: Sequence[int],
    output_size: int = 7,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """``Σ_l roi_align(features[l], rois, output_size, 1 / strides[l], sampling_ratio, aligned=True)``
    (torchvision's), ``[K, C, output_size, output_size]`` float32, as two matrix products.

    A bin's RoIAlign value is an average of bilinear samples on a ``sampling_ratio²`` grid, which
    factors into a y-weight row times the map times an x-weight column; with the levels placed
    side by side on one block-diagonal grid, the sum over levels is the same two products. On a
    CPU that is 3-4x faster than torchvision's scalar per-sample kernel called once per level (50
    boxes, 96 channels, strides 8/16/32 of a 200-pixel image, one thread), with the same numbers
    up to float rounding (~1e-6) and RoIAlign's gradient, so it serves training too.

    >>> from torchvision.ops import roi_align
    >>> features = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    >>> rois = torch.tensor([[0.0, 3.0, 5.0, 40.0, 30.0]])
    >>> expected = sum(roi_align(f, rois, 7, 1 / s, 2, aligned=True) for f, s in zip(features, (8, 16)))
    >>> torch.allclose(pyramid_roi_align(features, rois, (8, 16)), expected, atol=1e-5)
    True
    """
    heights, widths = [f.shape[-2] for f in features], [f.shape[-1] for f in features]
    batch, channels = features[0].shape[:2]
    count = rois.shape[0]
    # float32 whatever the autocast (as torchvision runs roi_align under autocast)
    with torch.autocast(rois.device.type, enabled=False):
        weights = bin_weights(rois, heights, widths, strides, output_size, sampling_ratio)
        rows, columns = weights[0, ..., : sum(heights)], weights[1, ..., : sum(widths)]
        # the levels on one block-diagonal grid [B, Σ H, C, Σ W]
        grid = features[0].new_zeros(batch, sum(heights), channels, sum(widths), dtype=torch.float32)
        top = left = 0
        for feature, height, width in zip(features, heights, widths, strict=True):
            grid[:, top : top + height, :, left : left + width] = feature.float().transpose(1, 2)
            top, left = top + height, left + width
        grid = grid.view(batch, sum(heights), channels * sum(widths))
        # one image: one matrix product for all boxes (no per-box copy of its grid)
        by_rows = rows @ grid[0] if batch == 1 else torch.bmm(rows, grid[rois[:, 0].long()])
        pooled = by_rows.view(count, output_size * channels, sum(widths)) @ columns.transpose(1, 2)
    return pooled.view(count, output_size, channels, output_size).transpose(1, 2)


class RecognitionHead(nn.Module):
    """RoIAlign on every pyramid level (summed) → MLP → L2-normalised embedding; scaled cosine logits.

    >>> head = RecognitionHead(8, embedding_dim=4, strides=(8,))
    >>> rois = torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0]])  # (image index, x1, y1, x2, y2)
    >>> embedding = head.embed([torch.randn(1, 8, 8, 8)], rois)
    >>> embedding.shape, bool(torch.allclose(embedding.norm(dim=-1), torch.ones(1)))
    (torch.Size([1, 4]), True)
    """

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int = 128,
        hidden: int = 256,
        pool_size: int = 7,
        strides: Sequence[int] = (8, 16, 32),
        scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.strides = tuple(strides)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * pool_size * pool_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embedding_dim),
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def pool(self, features: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """What the MLP reads: ``rois [K, 5]`` (image index, x1, y1, x2, y2) in pixels, pooled ``[K, C, P, P]``."""
        return pyramid_roi_align(features, rois, self.strides, self.pool_size, sampling_ratio=2)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[K, D]`` of pooled boxes (:meth:`pool`)."""
        return F.normalize(self.mlp(pooled), dim=-1)

    def embed(self, features: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[K, D]`` of ``rois [K, 5]`` (image index, x1, y1, x2, y2) in pixels."""
        return self.project(self.pool(features, rois))

    def logits(self, embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``scale · cos(embedding, prototype)``: ``[K, D] × [C, D] → [K, C]``."""
        return self.log_scale.exp() * embeddings @ F.normalize(prototypes, dim=-1).T

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        allowed: torch.Tensor,
        class_vectors: torch.Tensor,
        support: torch.Tensor,
        pseudo_label_confidence: float | None = None,
        unnamed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_classes`` (vs learned class vectors), ``loss_episode`` (vs batch prototypes) and
        ``loss_unnamed`` (:func:`unnamed_loss`: boxes flagged ``unnamed`` kept far from every class).

        ``embeddings [K, D]``, ``allowed [K, C]`` bool, ``class_vectors [C, D]``, ``support [K]``
        bool (which boxes form the episode's support; only single-label ones are used). With
        ``pseudo_label_confidence``, a box without class takes the class it is predicted as against
        the class vectors, where that prediction is that confident (:func:`pseudo_labels`), in both
        losses: in the episode it may then be support or query like a labelled box. A box flagged in
        ``unnamed [K]`` (of a type no class names) never does.
        """
        logits = self.logits(embeddings, class_vectors)
        taught = (
            allowed
            if pseudo_label_confidence is None
            else pseudo_labels(logits, allowed, pseudo_label_confidence, unnamed)
        )
        loss_classes = partial_label_loss(logits, taught)
        loss_unnamed = unnamed_loss(logits, allowed, unnamed)
        support = support & (taught.sum(-1) == 1)
        one_hot = (taught & support[:, None]).float()  # [K, C]
        present = one_hot.sum(0) > 0
        query = ~support & (taught & present).any(-1)
        parts = {"loss_classes": loss_classes, "loss_unnamed": loss_unnamed}
        if not query.any():
            return {**parts, "loss_episode": embeddings.sum() * 0}
        prototypes = one_hot.T @ embeddings.float()  # sums; normalised in logits()
        logits = self.logits(embeddings[query], prototypes).masked_fill(~present, -math.inf)
        return {**parts, "loss_episode": partial_label_loss(logits, taught[query] & present)}
