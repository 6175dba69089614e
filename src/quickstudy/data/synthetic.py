"""A built-in defect line: procedurally generated grayscale metal surfaces with labelled defects.

Every image is a rolled-metal-like surface (streaks along the rolling direction, a lighting
gradient, grain, mottling and sensor noise, all varying per image) carrying one to a few defects.
Six defect types differ in *shape and texture*, not just brightness: the sign and strength of each
defect's contrast vary, so a detector has to look at geometry.

- ``scratch``: a long, thin, straight or gently curved line, bright or dark;
- ``crack``: a jagged, branching, dark line;
- ``pit``: a cluster of small dark round holes, each with a lit rim;
- ``stain``: a large irregular blob with soft edges and low contrast, darker or lighter;
- ``inclusion``: a short dark spindle along the rolling direction, with ragged edges, sometimes broken;
- ``dent``: a smooth round depression, shaded light on one side and dark on the other.

Boxes are the exact extent of the rendered defect (pixels changed by more than a fixed fraction
of its peak contrast); ``min_box_side`` widens a thinner box about its centre, as a person
drawing a box around a hairline scratch leaves a margin. Everything is drawn with numpy from a generator seeded by
``(seed, image index)``, so ``sample(i)`` is the same image on every machine and in any order.
Image ``i`` holds defects of type ``defect_types[i % len(defect_types)]`` (and, sometimes, one of
another type), so every ``n`` consecutive images cover every type.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from quickstudy.errors import QuickstudyError
from quickstudy.labels.records import ImportedBox, ImportedImage

DEFECT_TYPES: tuple[str, ...] = ("scratch", "crack", "pit", "stain", "inclusion", "dent")

# A pixel belongs to a defect's box when the defect changes it by more than this fraction of the
# defect's largest change: the box is what a careful person would draw, not the faint tail.
_BOX_FRACTION = 0.2
# Defects of one image keep this many pixels apart, so boxes do not overlap.
_GAP = 2


@dataclass(frozen=True)
class _Defect:
    """One rendered defect: its additive change to the image (in grey levels) on a window."""

    delta: np.ndarray  # float32 [h, w]
    top: int
    left: int

    def box(self) -> tuple[int, int, int, int] | None:
        """Tight xyxy box (pixel edges, x2/y2 exclusive) of the pixels the defect visibly changes."""
        magnitude = np.abs(self.delta)
        peak = float(magnitude.max(initial=0.0))
        if peak <= 0:
            return None
        ys, xs = np.nonzero(magnitude > _BOX_FRACTION * peak)
        return (
            self.left + int(xs.min()),
            self.top + int(ys.min()),
            self.left + int(xs.max()) + 1,
            self.top + int(ys.max()) + 1,
        )


class SyntheticLine:
    """A seeded, deterministic stream of defect images with exact boxes.

    Example:
        >>> line = SyntheticLine(seed=0, size=96)
        >>> image, boxes, classes = line.sample(0)
        >>> image.shape, image.dtype, boxes.shape[1], classes[0]
        ((96, 96), dtype('uint8'), 4, 'scratch')
    """

    def __init__(
        self,
        seed: int = 0,
        size: int = 128,
        defect_types: Sequence[str] = DEFECT_TYPES,
        max_per_image: int = 3,
        p_second_type: float = 0.15,
        min_box_side: int = 0,
        frame: tuple[int, int] | None = None,
        colour: bool = False,
    ) -> None:
        unknown = [name for name in defect_types if name not in _RENDERERS]
        if unknown or not defect_types:
            raise QuickstudyError(
                f"synthetic line: unknown defect types {unknown or '(none given)'}; "
                f"known: {', '.join(DEFECT_TYPES)}"
            )
        if size < 48:
            raise QuickstudyError(f"synthetic line: size {size} is too small (at least 48 pixels)")
        if max_per_image < 1:
            raise QuickstudyError(f"synthetic line: max_per_image must be at least 1, got {max_per_image}")
        self.seed = seed
        self.size = size
        self.defect_types = tuple(defect_types)
        self.max_per_image = max_per_image
        self.p_second_type = p_second_type
        self.min_box_side = min_box_side
        self.frame = frame
        self.colour = colour
        if frame is not None and min(frame) < size:
            raise QuickstudyError(
                f"synthetic line: frame {frame[0]} x {frame[1]} is smaller than size {size}"
            )

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Image ``index``: ``(uint8 [H, W] or [H, W, 3] with colour, float32 [N, 4] xyxy boxes, N class
        names)``. With ``frame=(width, height)`` the image is a frame of that size whose defects are drawn
        as on a ``size`` image, so they stay small in a large frame (sides of 7–42 px at size 64)."""
        rng = np.random.default_rng([self.seed, index])
        size = self.size
        rolling_angle = float(rng.choice([0.0, 90.0], p=[0.7, 0.3]) + rng.normal(0, 3))
        width, height = self.frame or (size, size)
        image = (
            _surface(rng, size, rolling_angle)
            if self.frame is None
            else _frame_surface(rng, rolling_angle, (height, width))
        )

        primary = self.defect_types[index % len(self.defect_types)]
        kinds = [primary] * int(rng.integers(1, self.max_per_image + 1))
        if len(self.defect_types) > 1 and rng.random() < self.p_second_type:
            others = [name for name in self.defect_types if name != primary]
            kinds.append(str(rng.choice(others)))

        boxes: list[tuple[int, int, int, int]] = []
        classes: list[str] = []
        for kind in kinds:
            for _attempt in range(12):
                defect = _RENDERERS[kind](rng, size, rolling_angle)
                if self.frame is not None:  # the defect's square moves to a random place in the frame
                    defect = _Defect(
                        defect.delta,
                        defect.top + int(rng.integers(0, height - size + 1)),
                        defect.left + int(rng.integers(0, width - size + 1)),
                    )
                box = defect.box()
                if box is not None and self.min_box_side:
                    box = _widened(box, self.min_box_side)
                if box is None or not _fits(box, width, height) or any(_near(box, other) for other in boxes):
                    continue
                _paste(image, defect)
                boxes.append(box)
                classes.append(kind)
                break

        if self.colour:  # a tinted surface (painted, coated or anodised parts); defects keep its tint
            image = image[..., None] * rng.uniform(0.55, 1.25, 3).astype(np.float32)
        image += rng.normal(0.0, rng.uniform(1.0, 3.5), image.shape)  # sensor noise, over defects too
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return pixels, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), classes

    def imported_images(
        self, folder: str | Path, indices: Iterable[int], split: str | None = "train", labelled: bool = True
    ) -> list[ImportedImage]:
        """Images ``indices`` written to ``folder`` as ``line_<index>.png`` and returned as label-store
        import records (:meth:`quickstudy.labels.Store.import_images`): every box with its defect type as
        class, or without class when not ``labelled``; all tagged ``split``."""
        records = []
        for index in indices:
            image, boxes, classes = self.sample(index)
            path = Path(folder) / f"line_{index}.png"
            Image.fromarray(image).save(path)
            marked = [
                ImportedBox(tuple(float(v) for v in box), kind if labelled else None)  # type: ignore[arg-type]
                for box, kind in zip(boxes, classes, strict=True)
            ]
            records.append(ImportedImage(path, image.shape[1], image.shape[0], marked, split=split))
        return records

    def write_voc(
        self,
        out_dir: str | Path,
        n_images: int,
        start: int = 0,
        prefix: str = "line",
        names: Mapping[str, str] | None = None,
        unlabelled_fraction: float = 0.0,
    ) -> list[str]:
        """Write images ``start .. start + n_images - 1`` as Pascal VOC: ``JPEGImages/<name>.png``
        and ``Annotations/<name>.xml``. Returns the image names (``<prefix>_<index:05d>``).

        ``names`` renames defect types in the labels (``{"scratch": "line", "inclusion": "line"}``
        writes a coarser taxonomy); a random ``unlabelled_fraction`` of boxes is written with an empty
        ``<name/>`` (a box without class), drawn per image from the line's seed. Coordinates are
        the exact pixel edges of :meth:`sample` (x2, y2 exclusive), as quickstudy's VOC reader keeps
        the numbers it reads.
        """
        if not 0.0 <= unlabelled_fraction <= 1.0:
            raise QuickstudyError(
                f"{out_dir}: unlabelled_fraction must be in [0, 1], got {unlabelled_fraction}"
            )
        out = Path(out_dir)
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        written = []
        for index in range(start, start + n_images):
            name = f"{prefix}_{index:05d}"
            image, boxes, classes = self.sample(index)
            unlabelled = (
                np.random.default_rng([self.seed, index, 1]).random(len(classes)) < unlabelled_fraction
            )
            labels = [
                None if hide else (names or {}).get(kind, kind)
                for kind, hide in zip(classes, unlabelled, strict=True)
            ]
            Image.fromarray(image).save(out / "JPEGImages" / f"{name}.png")
            _voc_xml(f"{name}.png", image.shape, boxes, labels).write(
                out / "Annotations" / f"{name}.xml", encoding="utf-8"
            )
            written.append(name)
        return written


def _voc_xml(
    filename: str, shape: tuple[int, ...], boxes: np.ndarray, labels: list[str | None]
) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(shape[1])
    ET.SubElement(size, "height").text = str(shape[0])
    ET.SubElement(size, "depth").text = str(shape[2] if len(shape) == 3 else 1)
    for xyxy, label in zip(boxes.tolist(), labels, strict=True):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = label or ""
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), xyxy, strict=True):
            ET.SubElement(box, tag).text = str(int(value))
    ET.indent(root)
    return ET.ElementTree(root)


# --- placement ---------------------------------------------------------------------------------


def _widened(box: tuple[int, int, int, int], side: int) -> tuple[int, int, int, int]:
    """Grow a box about its centre to at least ``side`` pixels each way."""
    x1, y1, x2, y2 = box
    if x2 - x1 < side:
        x1 = (x1 + x2 - side) // 2
        x2 = x1 + side
    if y2 - y1 < side:
        y1 = (y1 + y2 - side) // 2
        y2 = y1 + side
    return x1, y1, x2, y2


def _fits(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    x1, y1, x2, y2 = box
    return x1 >= 1 and y1 >= 1 and x2 <= width - 1 and y2 <= height - 1 and x2 - x1 >= 3 and y2 - y1 >= 3


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1])


def _paste(image: np.ndarray, defect: _Defect) -> None:
    h, w = defect.delta.shape
    image[defect.top : defect.top + h, defect.left : defect.left + w] += defect.delta


# --- textures ----------------------------------------------------------------------------------


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    sigma_along: float,
    sigma_across: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Unit-variance Gaussian noise blurred by an oriented Gaussian (``angle`` in degrees from x).

    Filtering in the Fourier domain makes any orientation and any blur width cost the same; the
    wrap-around it implies is invisible in noise.
    """
    white = rng.standard_normal(shape)
    fy, fx = _frequencies(shape)
    transfer = _transfer(fy, fx, sigma_along, sigma_across, angle)
    field = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=shape)
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies ``(fy [H, 1], fx [1, W // 2 + 1])`` of ``np.fft.rfft2`` on ``shape``."""
    return np.fft.fftfreq(shape[0])[:, None], np.fft.rfftfreq(shape[1])[None, :]


def _transfer(
    fy: np.ndarray, fx: np.ndarray, sigma_along: float, sigma_across: float, angle: float
) -> np.ndarray:
    """The Fourier transfer of an oriented Gaussian blur (``angle`` in degrees from x)."""
    theta = np.deg2rad(angle)
    f_along = fx * np.cos(theta) + fy * np.sin(theta)
    f_across = -fx * np.sin(theta) + fy * np.cos(theta)
    return np.exp(-2 * np.pi**2 * ((sigma_along * f_along) ** 2 + (sigma_across * f_across) ** 2))


def _surface(rng: np.random.Generator, size: int, rolling_angle: float) -> np.ndarray:
    """A clean rolled-metal surface in grey levels (float32), ``size`` square."""
    shape = (size, size)
    base = rng.uniform(85, 175)
    streaks = _smooth_noise(rng, shape, rng.uniform(20, 60), rng.uniform(0.5, 1.2), rolling_angle)
    bands = _smooth_noise(rng, shape, rng.uniform(40, 90), rng.uniform(3, 8), rolling_angle)
    grain = _smooth_noise(rng, shape, 0.7, 0.7)
    mottling = _smooth_noise(rng, shape, rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(0, 180))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    yy, xx = yy / shape[0] - 0.5, xx / shape[1] - 0.5
    light_angle = rng.uniform(0, 2 * np.pi)
    gradient = xx * np.cos(light_angle) + yy * np.sin(light_angle)
    vignette = xx**2 + yy**2
    return (
        base
        + rng.uniform(2, 9) * streaks
        + rng.uniform(1, 6) * bands
        + rng.uniform(2, 7) * grain
        + rng.uniform(1, 7) * mottling
        + rng.uniform(0, 45) * gradient
        - rng.uniform(0, 40) * vignette
    ).astype(np.float32)


def _frame_surface(rng: np.random.Generator, rolling_angle: float, shape: tuple[int, int]) -> np.ndarray:
    """:func:`_surface`'s textures on a large frame ``shape`` in one pair of FFTs instead of four: the
    four are independent Gaussian fields, so their weighted sum is one Gaussian field whose power
    spectrum is the weighted sum of theirs (each scaled to unit variance), drawn at once; the lighting
    is broadcast from a row and a column instead of full coordinate grids."""
    height, width = shape
    base = rng.uniform(85, 175)
    fy, fx = _frequencies(shape)
    # rfft2 keeps half the spectrum: every column but the first (and the Nyquist one) stands for two
    twice = np.full(fx.shape, 2.0)
    twice[:, 0] = 1.0
    if width % 2 == 0:
        twice[:, -1] = 1.0
    power = np.zeros((height, fx.shape[1]))
    for amplitude, sigma_along, sigma_across, angle in (
        (rng.uniform(2, 9), rng.uniform(20, 60), rng.uniform(0.5, 1.2), rolling_angle),  # streaks
        (rng.uniform(1, 6), rng.uniform(40, 90), rng.uniform(3, 8), rolling_angle),  # bands
        (rng.uniform(2, 7), 0.7, 0.7, 0.0),  # grain
        (rng.uniform(1, 7), rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(0, 180)),  # mottling
    ):
        squared = _transfer(fy, fx, sigma_along, sigma_across, angle) ** 2
        # a blurred unit white noise has variance mean(|transfer|^2) over the full spectrum
        power += amplitude**2 * squared / ((twice * squared).sum() / (height * width))
    texture = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * np.sqrt(power), s=shape)
    yy = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :]
    light_angle = rng.uniform(0, 2 * np.pi)
    gradient = xx * np.cos(light_angle) + yy * np.sin(light_angle)
    lighting = rng.uniform(0, 45) * gradient - rng.uniform(0, 40) * (xx**2 + yy**2)
    return (texture.astype(np.float32) + lighting + np.float32(base)).astype(np.float32)


# --- drawing helpers ---------------------------------------------------------------------------


def _window(rng: np.random.Generator, size: int, extent: float) -> tuple[int, int, int]:
    """A square window of side ``2 * half`` that holds a defect of radius ``extent``, placed at random."""
    half = int(np.ceil(extent)) + 3
    half = min(half, size // 2 - 1)
    top = int(rng.integers(1, size - 2 * half))
    left = int(rng.integers(1, size - 2 * half))
    return top, left, half


def _distance_to_polyline(points: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Distance from each pixel centre (``yy``, ``xx``) to a polyline given as ``[K, 2]`` (x, y)."""
    nearest_sq = np.full(xx.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        np.minimum(nearest_sq, (xx - ax - t * dx) ** 2 + (yy - ay - t * dy) ** 2, out=nearest_sq)
    return np.sqrt(nearest_sq)


def _grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a ``2*half`` square window, origin at its centre."""
    coords = np.arange(2 * half, dtype=np.float32) - half + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _sign(rng: np.random.Generator, p_dark: float) -> float:
    return -1.0 if rng.random() < p_dark else 1.0


# --- the six defect types ----------------------------------------------------------------------


def _scratch(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    length = rng.uniform(0.3, 0.75) * size
    top, left, half = _window(rng, size, length / 2)
    length = min(length, 2 * half - 6)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(-0.5, 0.5, 12)[:, None]
    bow = rng.uniform(-0.12, 0.12) * length  # a gentle arc
    points = t * length * direction + (1 - 4 * t**2) * bow * normal
    yy, xx = _grid(half)
    distance = _distance_to_polyline(points, yy, xx)
    width = rng.uniform(0.5, 1.3)
    # Fades at both ends, as a tool mark does; strength varies along the line.
    along = (xx * direction[0] + yy * direction[1]) / (length / 2)
    fade = np.clip(1.3 - np.abs(along) ** 4, 0, 1)
    profile = np.exp(-((distance / width) ** 2)) * fade
    contrast = _sign(rng, 0.5) * rng.uniform(30, 70)
    return _Defect((contrast * profile).astype(np.float32), top, left)


def _crack(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    length = rng.uniform(0.2, 0.5) * size
    top, left, half = _window(rng, size, length / 2 + 2)
    steps = max(6, int(length / 3))
    course = rng.uniform(0, 2 * np.pi)
    trunk = [np.array([0.0, 0.0])]
    for _ in range(steps):
        course += rng.normal(0, 0.15)  # the course drifts slowly...
        heading = course + rng.normal(0, 0.8)  # ...while each step zigzags sharply off it
        trunk.append(trunk[-1] + rng.uniform(2.0, 4.0) * np.array([np.cos(heading), np.sin(heading)]))
    trunk_points = np.array(trunk)
    trunk_points -= (trunk_points.max(0) + trunk_points.min(0)) / 2  # centre it in the window
    trunk_points = np.clip(trunk_points, -half + 3, half - 3)
    yy, xx = _grid(half)
    distance = _distance_to_polyline(trunk_points, yy, xx)
    for _ in range(int(rng.integers(1, 4))):  # branches leave the trunk at sharp angles
        start = trunk_points[int(rng.integers(1, len(trunk_points) - 1))]
        branch_course = course + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch = [start]
        for _ in range(int(rng.integers(2, 5))):
            branch_heading = branch_course + rng.normal(0, 0.7)
            branch.append(branch[-1] + 2.5 * np.array([np.cos(branch_heading), np.sin(branch_heading)]))
        branch_points = np.clip(np.array(branch), -half + 3, half - 3)
        distance = np.minimum(distance, _distance_to_polyline(branch_points, yy, xx) + 0.3)
    width = rng.uniform(0.6, 1.2)
    profile = np.exp(-((distance / width) ** 2))
    contrast = -rng.uniform(35, 80)
    return _Defect((contrast * profile).astype(np.float32), top, left)


def _pit(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    radius = rng.uniform(5, 0.14 * size)
    top, left, half = _window(rng, size, radius + 3)
    yy, xx = _grid(half)
    delta = np.zeros_like(xx)
    light = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(40, 85)
    for _ in range(int(rng.integers(4, 14))):
        r = radius * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        cx, cy = r * np.cos(phi), r * np.sin(phi)
        pit_radius = rng.uniform(1.0, 2.6)
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / pit_radius**2
        hole = -np.exp(-d2)
        # The rim facing the light catches it: a bright crescent offset towards the light.
        rim = 0.5 * np.exp(
            -(
                (xx - cx - 0.9 * pit_radius * np.cos(light)) ** 2
                + (yy - cy - 0.9 * pit_radius * np.sin(light)) ** 2
            )
            / (0.6 * pit_radius) ** 2
        )
        delta = np.minimum(delta, depth * rng.uniform(0.6, 1.0) * hole) + depth * 0.4 * rim
    return _Defect(delta.astype(np.float32), top, left)


def _stain(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    radius = rng.uniform(0.1, 0.25) * size
    top, left, half = _window(rng, size, radius * 1.2)
    yy, xx = _grid(half)
    aspect = rng.uniform(0.6, 1.0)
    theta = rng.uniform(0, np.pi)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / radius
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / (radius * aspect)
    # An irregular outline: the ellipse's edge pushed in and out by smooth noise.
    wobble = _smooth_noise(rng, xx.shape, radius / 3, radius / 3)
    level = 1.0 - np.sqrt(u**2 + v**2) + 0.25 * wobble
    body = 1.0 / (1.0 + np.exp(-level / 0.08))  # soft edge
    texture = 1.0 + 0.25 * _smooth_noise(rng, xx.shape, 2.0, 2.0)
    contrast = _sign(rng, 0.65) * rng.uniform(14, 35)
    return _Defect((contrast * body * texture).astype(np.float32), top, left)


def _inclusion(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    length = rng.uniform(0.1, 0.35) * size
    top, left, half = _window(rng, size, length / 2 + 2)
    length = min(length, 2 * half - 6)
    theta = np.deg2rad(rolling_angle + rng.normal(0, 6))
    yy, xx = _grid(half)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / (length / 2)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    thickness = rng.uniform(1.0, 2.6) * np.clip(1 - u**2, 0, 1) ** 0.7  # spindle: thick middle, sharp tips
    ragged = 1.0 + 0.35 * _smooth_noise(rng, xx.shape, 1.5, 1.5)
    body = np.clip(1.3 - np.abs(v) / np.maximum(thickness * ragged, 1e-3), 0, 1)
    if rng.random() < 0.4:  # broken into segments along its length
        gaps = np.cos(u * np.pi * rng.integers(2, 4) + rng.uniform(0, np.pi)) > -0.6
        body = body * gaps
    contrast = _sign(rng, 0.85) * rng.uniform(35, 75)
    return _Defect((contrast * body).astype(np.float32), top, left)


def _dent(rng: np.random.Generator, size: int, rolling_angle: float) -> _Defect:
    radius = rng.uniform(6, 0.16 * size)
    top, left, half = _window(rng, size, radius * 1.8)
    yy, xx = _grid(half)
    aspect = rng.uniform(0.7, 1.0)
    theta = rng.uniform(0, np.pi)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / radius
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / (radius * aspect)
    depth = np.exp(-(u**2 + v**2) * 1.5)  # a smooth bowl
    # Shade it as light falling from one side: brightness follows the slope towards the light.
    gy, gx = np.gradient(depth)
    light = rng.uniform(0, 2 * np.pi)
    shading = -(gx * np.cos(light) + gy * np.sin(light)) * radius
    contrast = rng.uniform(35, 70)
    delta = contrast * shading - rng.uniform(0, 12) * depth
    return _Defect(delta.astype(np.float32), top, left)


_RENDERERS = {
    "scratch": _scratch,
    "crack": _crack,
    "pit": _pit,
    "stain": _stain,
    "inclusion": _inclusion,
    "dent": _dent,
}
