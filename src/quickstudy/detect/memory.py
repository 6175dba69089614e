"""The detector's class memory: what it knows by name, as plain data and the math on it.

One unit-norm prototype per class name (a box is named by its nearest prototype), each class's
operating score threshold, and the "unknown" similarity: a box less similar than that to every
prototype is a defect of no known type. A new class is a new row; nothing else moves.

No network, no training, no label store: a memory is built from embeddings (:func:`class_means`,
:func:`robust_mean`) and its payload holds only tensors and plain containers.

>>> memory = ClassMemory(["pit"], torch.tensor([[3.0, 4.0]]), operating={"pit": 0.4}, unknown=0.5)
>>> memory.prototypes
tensor([[0.6000, 0.8000]])
>>> bigger = memory.add("scratch", torch.tensor([0.0, 2.0]))
>>> bigger.classes, bigger.threshold("scratch"), bigger.drop(["pit"]).classes
(['pit', 'scratch'], 0.5, ['scratch'])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from quickstudy.errors import QuickstudyError

# Share of held-out known-class boxes allowed to fall below the "unknown" similarity.
UNKNOWN_QUANTILE = 0.05
# The operating threshold of a class that has none calibrated.
DEFAULT_OPERATING = 0.5


@dataclass(frozen=True)
class Detection:
    """One found defect: ``box`` (x1, y1, x2, y2) in the input image's pixels; ``abnormality``, how far
    its region is from normal surface (1 = the normality memory's threshold), None for a model
    without a normality memory."""

    box: tuple[float, float, float, float]
    class_name: str
    score: float
    similarity: float
    abnormality: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


UNKNOWN = "unknown"


class ClassMemory:
    """Class names, their prototypes ``[C, D]`` (float32, CPU, unit rows), per-class operating
    thresholds (a class without one uses :data:`DEFAULT_OPERATING`) and the two unknown similarities: a
    box is ``unknown`` below ``unknown_far`` from every prototype, or below ``unknown`` where its region
    is abnormal (a model without a normality memory: below ``unknown``; :func:`unknown_cuts`). A class
    learned from a few boxes may carry its own cut in ``unknown_by_class`` (:func:`leave_one_out_cut`):
    a box that near it counts as near as ``unknown`` (:meth:`nearest`).

    A value: :meth:`add`, :meth:`replace`, :meth:`drop` and :meth:`with_thresholds` return a new
    memory. Rows already of unit norm are kept bit for bit (normalising again may move their last
    bit), so adding a class leaves every other prototype exactly as it was.
    """

    def __init__(
        self,
        classes: Sequence[str],
        prototypes: torch.Tensor,
        operating: Mapping[str, float] | None = None,
        unknown: float = -1.0,
        unknown_far: float = -1.0,
        unknown_operating: float | None = None,
        unknown_by_class: Mapping[str, float] | None = None,
    ) -> None:
        names = tuple(classes)
        rows = prototypes.detach().float().cpu()
        if rows.dim() != 2 or rows.shape[0] != len(names):
            raise ValueError(f"{len(names)} class names for prototypes of shape {tuple(rows.shape)}")
        if len(set(names)) != len(names):
            raise ValueError(
                f"class names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
            )
        thresholds = {name: float(value) for name, value in (operating or {}).items()}
        own_cuts = {name: float(value) for name, value in (unknown_by_class or {}).items()}
        for what, values in (("operating thresholds", thresholds), ("unknown cuts", own_cuts)):
            strangers = [name for name in values if name not in names]
            if strangers:
                raise ValueError(f"{what} for classes not in the memory: {', '.join(strangers)}")
        norms = rows.norm(dim=-1, keepdim=True)
        self._classes = names
        self.prototypes = torch.where((norms - 1).abs() <= 1e-6, rows, rows / norms.clamp(min=1e-12))
        self.operating = thresholds
        self.unknown = float(unknown)
        self.unknown_far = float(unknown_far)
        self.unknown_operating = None if unknown_operating is None else float(unknown_operating)
        self.unknown_by_class = own_cuts
        # per class, how much lower its own cut lies than the common one (0 for most): see nearest()
        self._cut_offsets = torch.tensor(
            [min(own_cuts.get(n, self.unknown), self.unknown) - self.unknown for n in names]
        )

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"ClassMemory({list(self._classes)!r}, dim={self.prototypes.shape[1]}, unknown={self.unknown:.3f})"

    def index(self, name: str) -> int:
        """The row of class ``name``."""
        if name not in self._classes:
            raise ValueError(f"class {name!r} is not in the memory ({', '.join(self._classes)})")
        return self._classes.index(name)

    # -- the math ---------------------------------------------------------------------------------------
    def similarity(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``[N, C]`` of unit ``embeddings [N, D]`` to every prototype."""
        return embeddings @ self.prototypes.to(embeddings.device).T

    def nearest(self, similarity: torch.Tensor) -> torch.Tensor:
        """Per box, from its similarities ``[N, C]`` to every prototype: how near it is to the nearest
        class on the scale of :attr:`unknown`, ``max_c (similarity_c - (cut_c - unknown))`` where ``cut_c``
        is the class's own cut in :attr:`unknown_by_class` where that is lower than :attr:`unknown` (a
        later calibration may lower the common cut below it), else :attr:`unknown`; so without own cuts
        this is the highest similarity. The open-set test compares it with :attr:`unknown`.

        >>> memory = ClassMemory(["pit", "new"], torch.eye(2), unknown=0.8, unknown_by_class={"new": 0.5})
        >>> [round(v, 3) for v in memory.nearest(torch.tensor([[0.7, 0.1], [0.2, 0.6]])).tolist()]
        [0.7, 0.9]
        """
        # offsets of 0 for classes without a cut of their own: their similarities are kept bit for bit
        return (similarity - self._cut_offsets.to(similarity)).amax(-1)

    def threshold(self, name: str) -> float:
        """The operating score threshold of class ``name``."""
        return self.operating.get(name, DEFAULT_OPERATING)

    @property
    def unknown_score(self) -> float:
        """The score an unnamed defect needs: :attr:`unknown_operating` where calibration set one (on
        images holding known unknowns), else as sure as the least demanding named class."""
        if self.unknown_operating is not None:
            return self.unknown_operating
        return min(self.operating.values(), default=DEFAULT_OPERATING)

    # -- edits (each returns a new memory) --------------------------------------------------------------
    def add(
        self,
        name: str,
        prototype: torch.Tensor,
        threshold: float | None = None,
        unknown_cut: float | None = None,
    ) -> ClassMemory:
        """A memory with class ``name`` appended (its prototype ``[D]`` is normalised), with its own
        unknown cut where given."""
        if name in self._classes:
            raise ValueError(f"class {name!r} is already in the memory; replace it")
        operating = {**self.operating, **({name: threshold} if threshold is not None else {})}
        rows = torch.cat([self.prototypes, prototype.detach().float().cpu()[None]])
        own = {**self.unknown_by_class, **({name: unknown_cut} if unknown_cut is not None else {})}
        return ClassMemory([*self._classes, name], rows, operating, *self._unknown_thresholds, own)

    def replace(self, name: str, prototype: torch.Tensor, unknown_cut: float | None = None) -> ClassMemory:
        """A memory with the prototype of class ``name`` replaced (its threshold kept) and its own
        unknown cut set to ``unknown_cut`` (None: none of its own)."""
        rows = self.prototypes.clone()
        rows[self.index(name)] = prototype.detach().float().cpu()
        own = {k: v for k, v in self.unknown_by_class.items() if k != name}
        own.update({name: unknown_cut} if unknown_cut is not None else {})
        return ClassMemory(self._classes, rows, self.operating, *self._unknown_thresholds, own)

    def drop(self, names: Iterable[str]) -> ClassMemory:
        """A memory without the classes ``names`` (their prototypes and thresholds)."""
        gone = set(names)
        missing = gone - set(self._classes)
        if missing:
            raise ValueError(f"classes not in the memory: {', '.join(sorted(missing))}")
        kept = [i for i, name in enumerate(self._classes) if name not in gone]
        operating = {name: value for name, value in self.operating.items() if name not in gone}
        own = {name: value for name, value in self.unknown_by_class.items() if name not in gone}
        return ClassMemory(
            [self._classes[i] for i in kept], self.prototypes[kept], operating, *self._unknown_thresholds, own
        )

    def with_thresholds(
        self,
        operating: Mapping[str, float] | None = None,
        unknown: float | None = None,
        unknown_far: float | None = None,
        unknown_operating: float | None = None,
        unknown_by_class: Mapping[str, float] | None = None,
    ) -> ClassMemory:
        """A memory with these operating thresholds (all of them) and/or these unknown similarities, score
        threshold and classes' own cuts (all of them; ``{}``: none)."""
        return ClassMemory(
            self._classes,
            self.prototypes,
            self.operating if operating is None else operating,
            self.unknown if unknown is None else unknown,
            self.unknown_far if unknown_far is None else unknown_far,
            self.unknown_operating if unknown_operating is None else unknown_operating,
            self.unknown_by_class if unknown_by_class is None else unknown_by_class,
        )

    @property
    def _unknown_thresholds(self) -> tuple[float, float, float | None]:
        return self.unknown, self.unknown_far, self.unknown_operating

    # -- plain data -------------------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """``{"classes": [str], "prototypes": Tensor [C, D], "thresholds": {"unknown": float,
        "unknown_far": float, "unknown_operating": float | None, "unknown_by_class": {str: float},
        "operating": {str: float}}}``: tensors and plain containers only (a payload without ``unknown_far``
        was made when unknown always needed an abnormal region: -1, never; without ``unknown_operating``,
        when no calibration set it; without ``unknown_by_class``, when no class had a cut of its own)."""
        return {
            "classes": list(self._classes),
            "prototypes": self.prototypes.clone(),
            "thresholds": {
                "unknown": self.unknown,
                "unknown_far": self.unknown_far,
                "unknown_operating": self.unknown_operating,
                "unknown_by_class": dict(self.unknown_by_class),
                "operating": dict(self.operating),
            },
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], where: str = "class memory") -> ClassMemory:
        """The memory :meth:`to_payload` wrote; :class:`QuickstudyError` naming ``where`` if it is not one."""
        classes, prototypes = payload.get("classes"), payload.get("prototypes")
        thresholds = payload.get("thresholds")
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            raise QuickstudyError(f"{where}: the class names are not a list of strings")
        if not isinstance(prototypes, torch.Tensor) or not prototypes.is_floating_point():
            raise QuickstudyError(f"{where}: the prototypes are not a float tensor")
        if not isinstance(thresholds, dict):
            raise QuickstudyError(f"{where}: the thresholds are not a mapping")
        operating, unknown = thresholds.get("operating"), thresholds.get("unknown")
        if not isinstance(operating, dict) or not all(
            isinstance(name, str) and _is_number(value) for name, value in operating.items()
        ):
            raise QuickstudyError(
                f"{where}: the operating thresholds are not a mapping of class names to numbers"
            )
        if not _is_number(unknown):
            raise QuickstudyError(f"{where}: the unknown similarity {unknown!r} is not a number")
        unknown_far = thresholds.get("unknown_far", -1.0)
        if not _is_number(unknown_far):
            raise QuickstudyError(f"{where}: the unknown_far similarity {unknown_far!r} is not a number")
        unknown_operating = thresholds.get("unknown_operating")
        if unknown_operating is not None and not _is_number(unknown_operating):
            raise QuickstudyError(
                f"{where}: the unknown operating threshold {unknown_operating!r} is not a number"
            )
        unknown_by_class = thresholds.get("unknown_by_class", {})
        if not isinstance(unknown_by_class, dict) or not all(
            isinstance(name, str) and _is_number(value) for name, value in unknown_by_class.items()
        ):
            raise QuickstudyError(
                f"{where}: the per-class unknown cuts are not a mapping of class names to numbers"
            )
        try:
            return cls(
                classes, prototypes, operating, unknown, unknown_far, unknown_operating, unknown_by_class
            )
        except ValueError as error:
            raise QuickstudyError(f"{where}: {error}") from None

    def name_detections(self, out: dict[str, torch.Tensor], score_threshold: float | None) -> list[Detection]:
        """Name one image's raw output (every (box, class) pair): a box farther than :attr:`unknown` from
        every prototype, and abnormal where the output carries ``abnormality`` (a model with a normality
        memory), or farther than :attr:`unknown_far` whatever its region, is ``unknown`` with its
        class-agnostic score, kept where that reaches :attr:`unknown_score`; any other where it reaches its
        class's operating threshold (or ``score_threshold`` for all), then NMS per name."""
        memory = self
        unknown = memory.is_unknown(out)
        classes = memory.classes
        names = [classes[int(c)] for c in out["labels"]]
        thresholds = torch.tensor(
            [score_threshold if score_threshold is not None else memory.threshold(n) for n in names]
        )
        unknown_cut = score_threshold if score_threshold is not None else memory.unknown_score
        scores = torch.where(unknown, out["defect_scores"], out["scores"])
        keep = torch.where(unknown, scores >= unknown_cut, scores >= thresholds)
        group = torch.where(unknown, torch.full_like(out["labels"], -1), out["labels"])
        index = torch.nonzero(keep).flatten()
        index = index[batched_nms(out["boxes"][index], scores[index], group[index], 0.5)]
        return [
            Detection(
                tuple(float(v) for v in out["boxes"][i]),  # type: ignore[arg-type]
                UNKNOWN if unknown[i] else names[i],
                float(scores[i]),
                float(out["max_similarity"][i] if unknown[i] else out["similarity"][i]),
                float(out["abnormality"][i]) if "abnormality" in out else None,
            )
            for i in index.tolist()
        ]

    def is_unknown(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per row of one image's raw output, whether the open-set test calls its box ``unknown``: farther
        than :attr:`unknown` from every prototype and abnormal (where the output carries
        ``abnormality``), or farther than :attr:`unknown_far` whatever its region."""
        unknown = out["max_similarity"] < self.unknown
        if "abnormality" in out:
            unknown &= out["abnormality"] >= 1
        return unknown | (out["max_similarity"] < self.unknown_far)

    def unknown_detections(self, out: dict[str, torch.Tensor]) -> list[Detection]:
        """Every ``unknown`` detection of one image's raw output at any score (after NMS): what the
        ``unknown`` score's calibration and ``suggest`` rank."""
        return [d for d in self.name_detections(out, 0.0) if d.class_name == UNKNOWN]


def just_above(score: float) -> float:
    """The lowest threshold a detection scoring ``score`` fails: the next float32 above it. Scores are
    float32, and a threshold is compared with them as one, so the next float64 would round back to
    ``score`` and let it pass.

    >>> score = float(torch.tensor(0.3))
    >>> bool(torch.tensor(0.3) >= just_above(score)), bool(torch.tensor(0.3) >= math.nextafter(score, math.inf))
    (False, True)
    """
    return float(torch.nextafter(torch.tensor(score, dtype=torch.float32), torch.tensor(math.inf)))


def matched_cut(cut: float, before: torch.Tensor, after: torch.Tensor) -> float:
    """The cut under which as many of ``after`` lie as of ``before`` under ``cut``: the same boxes'
    nearness (:meth:`ClassMemory.nearest`) before and after their embeddings moved, so that a calibrated
    cut goes on calling the same share of them unknown. ``cut`` itself where none lay under it.

    >>> round(matched_cut(0.5, torch.tensor([0.4, 0.6, 0.8]), torch.tensor([0.3, 0.35, 0.7])), 4)
    0.3
    """
    below = int((before < cut).sum())
    if below == 0 or below > after.numel():
        return cut
    return just_above(float(after.sort().values[below - 1]))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def class_means(embeddings: torch.Tensor, allowed: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Per-class unit mean of the embeddings whose allowed set is exactly that class (``[C, D]``);
    a class without such a box keeps its ``fallback`` row (normalised).

    >>> class_means(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[True, False], [True, True]]),
    ...             torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
    tensor([[1., 0.],
            [0., 1.]])
    """
    single = (allowed.sum(-1) == 1)[:, None] & allowed
    sums = single.float().T @ embeddings
    seen = single.any(0)[:, None]
    return F.normalize(torch.where(seen, sums, fallback.to(sums)), dim=-1)


def leave_one_out_cut(embeddings: torch.Tensor) -> float | None:
    """How far from a class learned from the support ``embeddings [K, D]`` its unseen boxes may lie: the
    lowest similarity of a support box to the :func:`robust_mean` of the others (each left out, as an
    unseen box is not among them); None from fewer than two boxes.

    >>> round(leave_one_out_cut(F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.2], [1.0, -0.4]]), dim=-1)), 3)
    0.887
    """
    if embeddings.shape[0] < 2:
        return None
    rows = range(embeddings.shape[0])
    others = [robust_mean(embeddings[[j for j in rows if j != i]]) for i in rows]
    return float(min(embeddings[i] @ mean for i, mean in zip(rows, others, strict=True)))


def robust_mean(embeddings: torch.Tensor, keep: float = 0.8) -> torch.Tensor:
    """Unit-norm mean after dropping the ``1 - keep`` share of embeddings farthest from the plain
    mean (from 5 boxes on), so a mislabelled or odd support box does not drag the prototype.

    >>> robust_mean(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [1.0, -0.1], [-1.0, 0.0]]))
    tensor([1., 0.])
    """
    mean = F.normalize(embeddings.mean(0), dim=0)
    if embeddings.shape[0] >= 5:
        n = max(1, round(keep * embeddings.shape[0]))
        nearest = (embeddings @ mean).topk(n).indices
        mean = F.normalize(embeddings[nearest].mean(0), dim=0)
    return mean


def open_set_similarity(nearest: torch.Tensor, abnormal: torch.Tensor, allowed: int | None = None) -> float:
    """The "unknown" similarity of the open-set test "abnormal and farther than it from every
    prototype", from held-out known-class boxes: ``nearest``, each box's similarity to its nearest
    prototype, and ``abnormal``, whether its region is abnormal. The highest similarity at which at
    most ``allowed`` boxes (default: :data:`UNKNOWN_QUANTILE` of them) pass the test, and no higher than
    their median similarity (far must stay far, however few known boxes look abnormal); -1 when there
    are none.

    >>> open_set_similarity(torch.tensor([0.1, 0.5, 0.6, 0.7, 0.8]), torch.tensor([False, True, True, True, True]))
    0.5
    """
    if not nearest.numel():
        return -1.0
    allowed = int(UNKNOWN_QUANTILE * nearest.numel()) if allowed is None else allowed
    ordered = nearest[abnormal].sort().values
    cut = float(ordered[allowed]) if ordered.numel() > allowed else float("inf")
    return min(cut, float(nearest.median()))


def unknown_cuts(
    nearest: torch.Tensor,
    abnormal: torch.Tensor,
    unnamed_nearest: torch.Tensor,
    unnamed_abnormal: torch.Tensor,
) -> tuple[float, float]:
    """``(unknown, unknown_far)`` of :class:`ClassMemory` from held-out boxes: known-class ones
    (``nearest``, ``abnormal`` as for :func:`open_set_similarity`) and known unknowns (boxes of a type
    retired as unnamed, likewise). At most :data:`UNKNOWN_QUANTILE` of the known boxes may be called
    unknown by either test; that budget is split between "far" and "abnormal and far": half each, or,
    where known unknowns exist, whichever of half, all or none for "far" calls the most of them unknown.
    Half each serves both kinds of line: one whose normality memory flags new defects (a bright bar on
    the synthetic line, tests/unit/test_normality.py) and one where it flags few and distance alone
    tells (NEU-DET and the demo's line, benchmarks/results/unknowns.md).

    >>> nearest = torch.linspace(0.5, 0.99, 40)
    >>> flagged = torch.zeros(40, dtype=torch.bool)
    >>> unknown, far = unknown_cuts(nearest, flagged, torch.empty(0), torch.empty(0, dtype=torch.bool))
    >>> int((nearest < far).sum())  # half of 5% of 40 known boxes: the farthest one
    1
    >>> unknown, far = unknown_cuts(nearest, flagged, torch.tensor([0.45, 0.52]), torch.tensor([False, False]))
    >>> int((nearest < far).sum())  # the known unknowns are far, not abnormal: "far" takes the budget
    2
    """
    total = int(UNKNOWN_QUANTILE * nearest.numel())

    def split(far_budget: int) -> tuple[float, float]:
        far = open_set_similarity(nearest, torch.ones_like(abnormal), far_budget) if far_budget else -1.0
        rest = abnormal & (nearest >= far)
        return open_set_similarity(nearest, rest, total - int((nearest < far).sum())), far

    half = split(total // 2)
    if not unnamed_nearest.numel():
        return half
    candidates = [half, split(0), split(total)]
    called = [
        int((((unnamed_nearest < a) & unnamed_abnormal) | (unnamed_nearest < f)).sum()) for a, f in candidates
    ]
    return candidates[called.index(max(called))]


def unknown_similarity(own: torch.Tensor) -> float:
    """The "unknown" similarity from ``own``, the similarities of held-out known-class boxes to
    their own class's prototype: their :data:`UNKNOWN_QUANTILE` quantile (-1: never unknown, when
    there are none)."""
    return float(torch.quantile(own, UNKNOWN_QUANTILE)) if own.numel() else -1.0
