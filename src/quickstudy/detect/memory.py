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
    thresholds (a class without one uses :data:`DEFAULT_OPERATING`), the unknown similarity, and
    whether ``unknown`` also needs an abnormal region (``unknown_needs_abnormal``; calibration chooses,
    :func:`unknown_rule`).

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
        unknown_needs_abnormal: bool = True,
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
        strangers = [name for name in thresholds if name not in names]
        if strangers:
            raise ValueError(f"operating thresholds for classes not in the memory: {', '.join(strangers)}")
        norms = rows.norm(dim=-1, keepdim=True)
        self._classes = names
        self.prototypes = torch.where((norms - 1).abs() <= 1e-6, rows, rows / norms.clamp(min=1e-12))
        self.operating = thresholds
        self.unknown = float(unknown)
        self.unknown_needs_abnormal = bool(unknown_needs_abnormal)

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

    def threshold(self, name: str) -> float:
        """The operating score threshold of class ``name``."""
        return self.operating.get(name, DEFAULT_OPERATING)

    @property
    def unknown_score(self) -> float:
        """The score an unnamed defect needs: as sure as the least demanding named class."""
        return min(self.operating.values(), default=DEFAULT_OPERATING)

    # -- edits (each returns a new memory) --------------------------------------------------------------
    def add(self, name: str, prototype: torch.Tensor, threshold: float | None = None) -> ClassMemory:
        """A memory with class ``name`` appended (its prototype ``[D]`` is normalised)."""
        if name in self._classes:
            raise ValueError(f"class {name!r} is already in the memory; replace it")
        operating = {**self.operating, **({name: threshold} if threshold is not None else {})}
        rows = torch.cat([self.prototypes, prototype.detach().float().cpu()[None]])
        return ClassMemory([*self._classes, name], rows, operating, self.unknown, self.unknown_needs_abnormal)

    def replace(self, name: str, prototype: torch.Tensor) -> ClassMemory:
        """A memory with the prototype of class ``name`` replaced (its threshold kept)."""
        rows = self.prototypes.clone()
        rows[self.index(name)] = prototype.detach().float().cpu()
        return ClassMemory(self._classes, rows, self.operating, self.unknown, self.unknown_needs_abnormal)

    def drop(self, names: Iterable[str]) -> ClassMemory:
        """A memory without the classes ``names`` (their prototypes and thresholds)."""
        gone = set(names)
        missing = gone - set(self._classes)
        if missing:
            raise ValueError(f"classes not in the memory: {', '.join(sorted(missing))}")
        kept = [i for i, name in enumerate(self._classes) if name not in gone]
        operating = {name: value for name, value in self.operating.items() if name not in gone}
        return ClassMemory(
            [self._classes[i] for i in kept],
            self.prototypes[kept],
            operating,
            self.unknown,
            self.unknown_needs_abnormal,
        )

    def with_thresholds(
        self,
        operating: Mapping[str, float] | None = None,
        unknown: float | None = None,
        unknown_needs_abnormal: bool | None = None,
    ) -> ClassMemory:
        """A memory with these operating thresholds (all of them) and/or this unknown similarity and rule."""
        return ClassMemory(
            self._classes,
            self.prototypes,
            self.operating if operating is None else operating,
            self.unknown if unknown is None else unknown,
            self.unknown_needs_abnormal if unknown_needs_abnormal is None else unknown_needs_abnormal,
        )

    # -- plain data -------------------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """``{"classes": [str], "prototypes": Tensor [C, D], "thresholds": {"unknown": float,
        "unknown_needs_abnormal": bool, "operating": {str: float}}}``: tensors and plain containers only
        (a payload without ``unknown_needs_abnormal`` was made when the rule always needed it)."""
        return {
            "classes": list(self._classes),
            "prototypes": self.prototypes.clone(),
            "thresholds": {
                "unknown": self.unknown,
                "unknown_needs_abnormal": self.unknown_needs_abnormal,
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
        needs_abnormal = thresholds.get("unknown_needs_abnormal", True)
        if not isinstance(needs_abnormal, bool):
            raise QuickstudyError(f"{where}: unknown_needs_abnormal {needs_abnormal!r} is not true or false")
        try:
            return cls(classes, prototypes, operating, unknown, needs_abnormal)
        except ValueError as error:
            raise QuickstudyError(f"{where}: {error}") from None

    def name_detections(self, out: dict[str, torch.Tensor], score_threshold: float | None) -> list[Detection]:
        """Name one image's raw output (every (box, class) pair): a box farther than :attr:`unknown` from
        every prototype, and abnormal where the output carries ``abnormality`` (a model with a normality
        memory) and the rule asks for it, is ``unknown`` with its class-agnostic score; each kept where it reaches its class's
        operating threshold (or ``score_threshold``), then NMS per name."""
        memory = self
        unknown = out["max_similarity"] < memory.unknown
        if "abnormality" in out and memory.unknown_needs_abnormal:
            unknown &= out["abnormality"] >= 1
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


def open_set_similarity(nearest: torch.Tensor, abnormal: torch.Tensor) -> float:
    """The "unknown" similarity of the open-set test "abnormal and farther than it from every
    prototype", from held-out known-class boxes: ``nearest``, each box's similarity to its nearest
    prototype, and ``abnormal``, whether its region is abnormal. The highest similarity at which at
    most :data:`UNKNOWN_QUANTILE` of the boxes pass the test, and no higher than their median
    similarity (far must stay far, however few known boxes look abnormal); -1 when there are none.

    >>> open_set_similarity(torch.tensor([0.1, 0.5, 0.6, 0.7, 0.8]), torch.tensor([False, True, True, True, True]))
    0.5
    """
    if not nearest.numel():
        return -1.0
    allowed = int(UNKNOWN_QUANTILE * nearest.numel())
    ordered = nearest[abnormal].sort().values
    cut = float(ordered[allowed]) if ordered.numel() > allowed else float("inf")
    return min(cut, float(nearest.median()))


def unknown_rule(
    similarity: torch.Tensor,
    own: torch.Tensor,
    abnormal: torch.Tensor,
    unnamed_nearest: torch.Tensor,
    unnamed_abnormal: torch.Tensor,
) -> tuple[float, bool]:
    """The unknown similarity and whether ``unknown`` needs an abnormal region, from held-out boxes:
    known-class ones (``similarity [N, C]`` to every prototype, ``own [N, C]`` their class, ``abnormal
    [N]`` whether their region is) and known unknowns (boxes of a type retired as unnamed: their
    similarity to the nearest prototype and abnormality). Each rule — "far and abnormal", "far" — gets
    its similarity from :func:`open_set_similarity` (at most :data:`UNKNOWN_QUANTILE` of the known boxes
    called unknown), and the rule that calls more of the known unknowns unknown is taken. Without
    known unknowns, each known class in turn plays the new type (its boxes against the other classes'
    prototypes only, the leave-one-class-out of open-set meta-learning); with a single class, "far
    and abnormal".

    >>> similarity = torch.tensor([[0.99, 0.2], [0.98, 0.1], [0.95, 0.3], [0.3, 0.97], [0.2, 0.99]])
    >>> own = torch.tensor([[True, False]] * 3 + [[False, True]] * 2)
    >>> flagged = torch.tensor([False, False, False, False, True])  # a memory that flags few boxes
    >>> cut, needs_abnormal = unknown_rule(similarity, own, flagged, torch.tensor([0.8]), torch.tensor([False]))
    >>> round(cut, 2), needs_abnormal  # the known unknown is far, not abnormal: "far" calls it
    (0.95, False)
    >>> cut, needs_abnormal = unknown_rule(similarity, own, flagged, torch.empty(0), torch.empty(0, dtype=torch.bool))
    >>> round(cut, 2), needs_abnormal  # each class is far from the other's prototype, rarely abnormal
    (0.95, False)
    >>> every = torch.ones(5, dtype=torch.bool)
    >>> cut, needs_abnormal = unknown_rule(similarity, own, every, torch.empty(0), torch.empty(0, dtype=torch.bool))
    >>> round(cut, 2), needs_abnormal  # every box abnormal: the two rules call the same, keep both tests
    (0.95, True)
    """
    nearest = similarity.amax(-1)
    if not unnamed_nearest.numel() and similarity.shape[-1] > 1:
        unnamed_nearest, unnamed_abnormal = similarity.masked_fill(own, -math.inf).amax(-1), abnormal
    both = open_set_similarity(nearest, abnormal)
    far = open_set_similarity(nearest, torch.ones_like(abnormal))
    called_both = int(((unnamed_nearest < both) & unnamed_abnormal).sum())
    called_far = int((unnamed_nearest < far).sum())
    return (both, True) if called_both >= called_far else (far, False)


def unknown_similarity(own: torch.Tensor) -> float:
    """The "unknown" similarity from ``own``, the similarities of held-out known-class boxes to
    their own class's prototype: their :data:`UNKNOWN_QUANTILE` quantile (-1: never unknown, when
    there are none)."""
    return float(torch.quantile(own, UNKNOWN_QUANTILE)) if own.numel() else -1.0
