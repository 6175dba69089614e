"""From label-store samples to detector batches: decoded from disk in bounded memory, augmented on the device.

A :class:`DetectionSet` holds the input views of its samples (each image letterboxed to the network's
input size ``S``, aspect kept and padded, or cut into full-resolution tiles), decoded when a batch asks
for them and kept in an LRU cache of :data:`DECODE_CACHE_BYTES`; and the boxes padded to ``[N, M, 4]``
with, per box, the set of classes its label allows as a ``[N, M, C]`` mask. ``batch`` draws the augmentation (:data:`AUGMENTATIONS`: the
horizontal and vertical flips, or all 8 flips/rotations of the square, then brightness/contrast) and the RoIs of the
recognition task (every box plus jittered copies, half of the single-label boxes as the episode's
support) from one ``torch.Generator``, all batch-wise on the device.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from quickstudy.data import geometry
from quickstudy.data.images import as_channels, read_image

# Geometric augmentations by name. "flips" keeps the axes (a rolled surface's defects have a
# direction: on NEU-DET 93% of inclusion boxes are taller than wide, 70% of crazing boxes wider),
# and scored higher on P2 (BENCHMARKS.md); "dihedral" also transposes, for surfaces without a
# canonical orientation.
AUGMENTATIONS = ("flips", "dihedral")
DEFAULT_AUGMENT = "flips"
# Brightness ±0.1 and contrast ×[0.75, 1.25] per image on top of the geometry. Off by default:
# NEU-DET's grey levels are part of what tells the defect types apart, and P2 scored lower with it.
DEFAULT_PHOTOMETRIC = False
# The share of training images given a synthetic defect of no named type (paste_synthetic_defects).
DEFAULT_SYNTHETIC_DEFECTS = 0.0
# The share of training images squeezed along one axis (squeeze_images), and the range of the factor.
DEFAULT_SQUEEZE = 0.0
SQUEEZE_FACTOR = (1.0, 3.0)


def letterbox(pixels: np.ndarray, size: int) -> tuple[torch.Tensor, float]:
    """:func:`quickstudy.data.geometry.letterbox` as a ``uint8 [C, size, size]`` tensor, and the scale."""
    image, scale = geometry.letterbox(pixels, size)
    return torch.from_numpy(image), scale


def read_for_model(path: Any, channels: int) -> tuple[np.ndarray, str | None]:
    """The image at ``path`` as the network takes it (grey ``[H, W]`` or colour ``[H, W, 3]``), and a note
    when its kind had to be converted: never silently."""
    return as_channels(read_image(path, colour=True), channels, str(path))


# Decoded training images are kept up to this many bytes (least recently used dropped first): a store
# of any size trains in bounded memory; NEU-DET (58 MB) is decoded once, as when it was all kept.
DECODE_CACHE_BYTES = 2 << 30


class DecodedImages:
    """The input views of a :class:`DetectionSet`, decoded from disk when indexed: each view is a whole
    image letterboxed, or one full-resolution tile at ``origin``. Indexing (a slice, or a tensor or list
    of indices) gives ``uint8 [B, C, S, S]`` on the CPU; decoded views stay in an LRU cache bounded by
    ``cache_bytes``."""

    def __init__(
        self,
        views: Sequence[tuple[str, tuple[int, int] | None]],
        channels: int,
        size: int,
        cache_bytes: int = DECODE_CACHE_BYTES,
    ) -> None:
        self.views = list(views)
        self.channels, self.size = channels, size
        self.capacity = max(1, cache_bytes // (channels * size * size))
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._of_path: dict[str, list[int]] = {}  # the views of each image: one decode serves all its tiles
        for i, (path, _) in enumerate(self.views):
            self._of_path.setdefault(path, []).append(i)
        self.decodes = 0  # images read from disk, for tests and benchmarks

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.views), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, key: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        if isinstance(key, int):
            return self._view(key)
        if isinstance(key, slice):
            indices = list(range(len(self.views)))[key]
        else:
            indices = [int(i) for i in (key.tolist() if isinstance(key, torch.Tensor) else key)]
        if not indices:
            return torch.zeros(0, self.channels, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self._view(i) for i in indices])

    def _view(self, i: int) -> torch.Tensor:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        path = self.views[i][0]
        pixels = read_for_model(path, self.channels)[0]
        self.decodes += 1
        siblings = [j for j in self._of_path[path] if j != i and j not in self._cache]
        # i last, so that it is the most recent; siblings only while the cache has room for them
        for j in [*siblings[: max(0, self.capacity - len(self._cache) - 1)], i]:
            origin = self.views[j][1]
            image = (
                letterbox(pixels, self.size)[0]
                if origin is None
                else torch.from_numpy(geometry.crop(pixels, *origin, self.size))
            )
            self._cache[j] = image
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return self._cache[i]


@dataclass
class DetectionSet:
    """Input views (whole images or tiles), padded boxes and allowed-class masks of label-store samples."""

    images: DecodedImages  # uint8 [N, C, S, S] when indexed: letterboxed images or tiles
    boxes: torch.Tensor  # float [N, M, 4], input pixels
    valid: torch.Tensor  # bool [N, M]
    allowed: torch.Tensor  # bool [N, M, C]
    classes: list[str]
    paths: list[str]
    # bool [N, M]: the box is of a type no class names (a class retired as unnamed), never pseudo-labelled
    unnamed: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def __post_init__(self) -> None:
        if self.unnamed.dim() == 1:  # not given: no box is known to be of an unnamed type
            self.unnamed = torch.zeros_like(self.valid)

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[Any],
        classes: Sequence[str],
        image_size: int,
        channels: int = 1,
        tiling: bool = False,
        cache_bytes: int = DECODE_CACHE_BYTES,
    ) -> DetectionSet:
        """Each sample letterboxed (:func:`letterbox`) with ``channels`` channels; with ``tiling``, cut
        instead into the overlapping full-resolution tiles the predictor will see
        (:func:`quickstudy.data.geometry.tile_origins`), each tile an entry with the boxes it holds
        (a box cut by a tile's edge is kept there when at least half of it is inside). Geometry comes
        from the samples' stored sizes; pixels are decoded when a batch asks for them
        (:class:`DecodedImages`). ``samples`` are :class:`quickstudy.labels.Sample` s.

        A box's label is read against ``classes`` as the label semantics say: its ``allowed`` set
        within ``classes`` is its class set; a set naming none of ``classes`` (a type these classes do
        not include, e.g. one held out of training) is :attr:`unnamed`, as is a box whose class was
        retired as a type no class names; a set naming some of ``classes`` and some other type keeps
        no class (it may be that other type, so it names none of ``classes`` for sure). An empty
        ``classes`` (class-agnostic use) reads boxes only."""
        index = {name: i for i, name in enumerate(classes)}
        entries: list[tuple[tuple[str, tuple[int, int] | None], list[tuple[Any, Any, bool]]]] = []
        for sample in samples:
            boxes = [(tuple(float(v) for v in b.xyxy), *_read_label(b, index)) for b in sample.boxes]
            if not tiling:
                scale = image_size / max(sample.width, sample.height)
                entries.append(
                    (
                        (str(sample.path), None),
                        [(tuple(v * scale for v in xyxy), a, u) for xyxy, a, u in boxes],
                    )
                )
                continue
            for x0, y0 in geometry.tile_origins(sample.width, sample.height, image_size):
                inside = [
                    (clipped, allowed, unnamed)
                    for xyxy, allowed, unnamed in boxes
                    if (clipped := _clipped(xyxy, x0, y0, image_size)) is not None
                ]
                entries.append(((str(sample.path), (x0, y0)), inside))
        m = max([len(boxes) for _, boxes in entries] + [1])
        n = len(entries)
        boxes_tensor = torch.zeros(n, m, 4)
        valid = torch.zeros(n, m, dtype=torch.bool)
        allowed = torch.zeros(n, m, len(classes), dtype=torch.bool)
        unnamed = torch.zeros(n, m, dtype=torch.bool)
        for i, (_, entry_boxes) in enumerate(entries):
            for j, ((x1, y1, x2, y2), names, of_unnamed_type) in enumerate(entry_boxes):
                boxes_tensor[i, j] = torch.tensor([x1, y1, x2, y2])
                valid[i, j] = x2 > x1 and y2 > y1
                unnamed[i, j] = of_unnamed_type
                for name in names:
                    if name in index:
                        allowed[i, j, index[name]] = True
        images = DecodedImages([view for view, _ in entries], channels, image_size, cache_bytes)
        paths = [view[0] for view, _ in entries]
        return cls(images, boxes_tensor, valid, allowed, list(classes), paths, unnamed)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> DetectionSet:
        """The targets on ``device``; images are decoded on the CPU and each batch moves there."""
        return DetectionSet(
            self.images,
            self.boxes.to(device),
            self.valid.to(device),
            self.allowed.to(device),
            self.classes,
            self.paths,
            self.unnamed.to(device),
        )

    def batch(
        self,
        indices: torch.Tensor,
        generator: torch.Generator | None = None,
        augment: str | None = DEFAULT_AUGMENT,
        jitter: int = 1,
        photometric: bool = DEFAULT_PHOTOMETRIC,
        decoded: torch.Tensor | None = None,
        synthetic: float = 0.0,
        squeeze: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images ``float [B, C, S, S]`` in [0, 1] and the model's training targets; ``augment`` is
        one of :data:`AUGMENTATIONS` or None (no augmentation at all); ``photometric`` adds
        brightness and contrast changes to it; ``squeeze``: the share of images squeezed along one
        axis (:func:`squeeze_images`); ``synthetic``: the share of images given a
        synthetic defect (:func:`paste_synthetic_defects`). ``decoded``: the views of ``indices``
        when already decoded (by a :class:`~quickstudy.detect.loading.StepLoader` worker)."""
        views = self.images[indices.cpu()] if decoded is None else decoded
        images = views.to(self.boxes.device).float() / 255
        indices = indices.to(self.boxes.device)
        boxes, valid, allowed = self.boxes[indices], self.valid[indices], self.allowed[indices]
        unnamed = self.unnamed[indices]
        if augment is not None:
            images, boxes = _augment(images, boxes, generator, augment == "dihedral", photometric)
        if squeeze > 0:  # no draws at 0: a run without it stays what it was
            images, boxes = squeeze_images(images, boxes, squeeze, generator)
        if synthetic > 0:
            images, pasted = paste_synthetic_defects(images, boxes, valid, synthetic, generator)
            found = pasted[:, None].any(-1)
            boxes, valid = torch.cat([boxes, pasted[:, None]], 1), torch.cat([valid, found], 1)
            allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], 1, allowed.shape[2])], 1)
            unnamed = torch.cat([unnamed, found], 1)
        rois, roi_allowed, roi_support = _rois(boxes, valid, allowed, images.shape[-1], jitter, generator)
        targets = {
            "boxes": boxes,
            "valid": valid,
            "rois": rois,
            "roi_allowed": roi_allowed,
            "roi_support": roi_support,
            "roi_unnamed": unnamed[valid].repeat(jitter + 1),  # in _rois' order
        }
        return images, targets


def _read_label(box: Any, index: Mapping[str, int]) -> tuple[frozenset[str], bool]:
    """A stored box's ``(class set, unnamed)`` for training on the classes of ``index``
    (:meth:`DetectionSet.from_samples`)."""
    if not index or not box.allowed:
        return frozenset(), bool(box.unnamed)
    inside = frozenset(name for name in box.allowed if name in index)
    if not inside:
        return frozenset(), True
    return (inside if inside == box.allowed else frozenset()), False


def _clipped(
    xyxy: tuple[float, ...], x0: int, y0: int, tile: int
) -> tuple[float, float, float, float] | None:
    """``xyxy`` in the coordinates of the tile at ``(x0, y0)``, cut to it; None when less than half of the
    box lies inside."""
    x1, y1, x2, y2 = xyxy
    cx1, cy1 = max(x1, x0), max(y1, y0)
    cx2, cy2 = min(x2, x0 + tile), min(y2, y0 + tile)
    if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < 0.5 * (x2 - x1) * (y2 - y1):
        return None
    return cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0


def _uniform(shape: Sequence[int], low: float, high: float, generator, device) -> torch.Tensor:
    return (torch.rand(*shape, generator=generator) * (high - low) + low).to(device)


def _augment(
    images: torch.Tensor,
    boxes: torch.Tensor,
    generator: torch.Generator | None,
    transpose: bool = True,
    photometric: bool = DEFAULT_PHOTOMETRIC,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image a random horizontal and vertical flip and, with ``transpose``, a random transpose
    (together: a random element of the square's symmetry group), then with ``photometric``
    brightness ±0.1 and contrast ×[0.75, 1.25] around the image mean. The same random draws
    whatever the switches."""
    b, size, device = images.shape[0], images.shape[-1], images.device
    flips = (torch.rand(3, b, generator=generator) < 0.5).to(device)
    flips[2] &= transpose
    x1, y1, x2, y2 = boxes.unbind(-1)
    h = flips[0].view(b, 1, 1, 1)
    images = torch.where(h, images.flip(-1), images)
    x1, x2 = torch.where(flips[0, :, None], size - x2, x1), torch.where(flips[0, :, None], size - x1, x2)
    v = flips[1].view(b, 1, 1, 1)
    images = torch.where(v, images.flip(-2), images)
    y1, y2 = torch.where(flips[1, :, None], size - y2, y1), torch.where(flips[1, :, None], size - y1, y2)
    t = flips[2].view(b, 1, 1, 1)
    images = torch.where(t, images.transpose(-1, -2), images)
    tb = flips[2, :, None]
    boxes = torch.stack(
        [torch.where(tb, y1, x1), torch.where(tb, x1, y1), torch.where(tb, y2, x2), torch.where(tb, x2, y2)],
        -1,
    )
    contrast = _uniform((b, 1, 1, 1), 0.75, 1.25, generator, device)
    brightness = _uniform((b, 1, 1, 1), -0.1, 0.1, generator, device)
    if photometric:
        mean = images.mean((1, 2, 3), keepdim=True)
        images = ((images - mean) * contrast + mean + brightness).clamp(0, 1)
    return images, boxes


def squeeze_images(
    images: torch.Tensor, boxes: torch.Tensor, share: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squeeze each image of ``images [B, C, S, S]``, with probability ``share``, along one axis (x or y
    at even odds) by a factor drawn log-uniformly from :data:`SQUEEZE_FACTOR`, at a random place along
    that axis, the freed band filled with the image's mean; ``boxes [B, M, 4]`` follow. Anisotropic
    zoom-out (SSD's expand along one axis): every box stays whole and exact, and the class-agnostic
    localizer sees boxes thinner and longer than the known types hold, as a type it never saw may be
    (P3's scratches: benchmarks/results/unknowns.md)."""
    b, size, device = images.shape[0], images.shape[-1], images.device
    draws = torch.rand(4, b, generator=generator).to(device)
    chosen, along_x = draws[0] < share, draws[1] < 0.5
    low, high = (math.log(f) for f in SQUEEZE_FACTOR)
    factor = torch.where(chosen, torch.exp(low + draws[2] * (high - low)), torch.ones_like(draws[2]))
    offset = draws[3] * (size - size / factor)  # pixels before the squeezed image on its axis
    # output pixel u reads input pixel (u - offset) * factor; in affine_grid's [-1, 1] coordinates
    shift = factor - 1 - 2 * offset * factor / size
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = torch.where(along_x, factor, 1.0)
    theta[:, 0, 2] = torch.where(along_x, shift, 0.0)
    theta[:, 1, 1] = torch.where(along_x, 1.0, factor)
    theta[:, 1, 2] = torch.where(along_x, 0.0, shift)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    squeezed = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    covered = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear", align_corners=False)
    squeezed = squeezed + (1 - covered) * images.mean((1, 2, 3), keepdim=True)
    fx = torch.where(along_x, factor, 1.0)[:, None]
    fy = torch.where(along_x, 1.0, factor)[:, None]
    ox = torch.where(along_x, offset, 0.0)[:, None]
    oy = torch.where(along_x, 0.0, offset)[:, None]
    x1, y1, x2, y2 = boxes.unbind(-1)
    moved = torch.stack([x1 / fx + ox, y1 / fy + oy, x2 / fx + ox, y2 / fy + oy], -1)
    return (
        torch.where(chosen.view(b, 1, 1, 1), squeezed, images),
        torch.where(chosen.view(b, 1, 1), moved, boxes),
    )


# A synthetic defect's box side, as shares of the image side (the small and large defects of NEU-DET
# and the synthetic line lie in this range), and the brightness step that makes it a departure from
# its surroundings.
SYNTHETIC_SIDE = (0.06, 0.25)
SYNTHETIC_SHIFT = (0.12, 0.35)


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(max(1, high), (1,), generator=generator))


def paste_synthetic_defects(
    images: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    rate: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each image of ``images [B, C, S, S]``, with probability ``rate``, one synthetic defect clear
    of its ``boxes [B, M, 4]`` (``valid [B, M]``): an irregular region (coarse noise upsampled and
    thresholded, as DRAEM's Perlin masks, Zavrtanik et al. 2021) filled with the texture of a patch of
    another image of the batch (as CutPaste, Li et al. 2021), its brightness stepped by
    :data:`SYNTHETIC_SHIFT` from the surface it covers. Returns the images and each one's defect box
    ``[B, 4]`` (all zeros where none was pasted): a class-less box of a type no class names, so the
    localizer learns that a departure from the surface is a defect and the recognition head that it is
    none of the known types."""
    b, _, size, _ = images.shape
    out, pasted = images.clone(), torch.zeros(b, 4, device=images.device)
    draws = torch.rand(b, 8, generator=generator)
    for i in range(b):
        if draws[i, 0] >= rate:
            continue
        # the letterbox pads at the right and bottom with a constant: paste inside the picture
        rows = torch.nonzero(images[i].std(dim=(0, 2)) > 0).flatten()
        cols = torch.nonzero(images[i].std(dim=(0, 1)) > 0).flatten()
        height, width = (int(rows[-1]) + 1, int(cols[-1]) + 1) if len(rows) and len(cols) else (size, size)
        side = size * (SYNTHETIC_SIDE[0] + float(draws[i, 1]) * (SYNTHETIC_SIDE[1] - SYNTHETIC_SIDE[0]))
        aspect = math.exp(2 * float(draws[i, 2]) - 1)
        w = int(min(max(4, round(side * math.sqrt(aspect))), width // 2))
        h = int(min(max(4, round(side / math.sqrt(aspect))), height // 2))
        if w < 4 or h < 4:
            continue
        others = boxes[i][valid[i]]
        for _ in range(10):
            x0, y0 = _randint(width - w + 1, generator), _randint(height - h + 1, generator)
            placed = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=others.dtype, device=others.device)
            if not (box_iou(placed, others) > 0).any():
                break
        else:
            continue
        noise = torch.rand(1, 1, 4, 4, generator=generator).to(images.device)
        noise_field = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        mask = noise_field > torch.quantile(noise_field, 0.3 + 0.3 * float(draws[i, 3]))
        source = _randint(b, generator)
        sx, sy = _randint(size - w + 1, generator), _randint(size - h + 1, generator)
        texture = images[source, :, sy : sy + h, sx : sx + w]
        if draws[i, 4] < 0.5:
            texture = texture.flip(-1)
        region = out[i, :, y0 : y0 + h, x0 : x0 + w]
        shift = (1 if draws[i, 5] < 0.5 else -1) * (
            SYNTHETIC_SHIFT[0] + float(draws[i, 6]) * (SYNTHETIC_SHIFT[1] - SYNTHETIC_SHIFT[0])
        )
        filled = (texture - texture.mean()) * (0.5 + float(draws[i, 7])) + region.mean() + shift
        region[:, mask] = filled.clamp(0, 1)[:, mask]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        pasted[i] = torch.tensor(
            [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1],
            dtype=pasted.dtype,
        )
    return out, pasted


def _rois(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    allowed: torch.Tensor,
    size: int,
    jitter: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every valid box (``[K, 5]`` with its image index) plus ``jitter`` copies shifted by up to
    10% of its size and scaled by up to ±15%; half of the exact boxes are the episode's support."""
    device = boxes.device
    image_index = torch.arange(boxes.shape[0], device=device)[:, None].expand_as(valid)[valid]
    exact = boxes[valid]
    labels = allowed[valid]
    k = exact.shape[0]
    all_boxes, all_labels, all_index = [exact], [labels], [image_index]
    for _ in range(jitter):
        wh = exact[:, 2:] - exact[:, :2]
        center = (exact[:, :2] + exact[:, 2:]) / 2 + _uniform((k, 2), -0.1, 0.1, generator, device) * wh
        wh = wh * torch.exp(_uniform((k, 2), -0.15, 0.15, generator, device))
        moved = torch.cat([center - wh / 2, center + wh / 2], 1).clamp(0, size)
        all_boxes.append(moved)
        all_labels.append(labels)
        all_index.append(image_index)
    rois = torch.cat([torch.cat(all_index)[:, None].float(), torch.cat(all_boxes)], 1)
    support = torch.zeros(rois.shape[0], dtype=torch.bool, device=device)
    support[:k] = (torch.rand(k, generator=generator) < 0.5).to(device)
    return rois, torch.cat(all_labels), support
