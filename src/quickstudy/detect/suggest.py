"""Which unlabelled images a person should look at next, so the few images they mark are the right few.

Two questions, one ranking each:

- *what is new here?* (no class): an image ranks by its highest-scoring ``unknown`` detection at any
  score, the open-set test of :meth:`~quickstudy.detect.memory.ClassMemory.name_detections` (a region
  abnormal to the normality memory and far from every prototype; without a normality memory, far
  alone), scored by its class-agnostic defect score. An image with none scores 0. (Its highest
  abnormality alone ranks worse: known defect types are abnormal surface too.)
- *where is more of the type being taught?* (``class_name``): an image ranks by its highest detection
  score of that class.

>>> ranked = rank_images(Predictor.from_dir("runs/line"), store.samples())  # doctest: +SKIP
>>> ranked[0].why  # doctest: +SKIP
'unknown at defect score 0.55 (similarity to the nearest type 0.71, abnormality 1.24)'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quickstudy.detect.predictor import Predictor
from quickstudy.errors import QuickstudyError

# Images per forward pass chunk: each image's proposals are reduced to one suggestion, so memory stays
# bounded however large the store.
CHUNK = 64


@dataclass(frozen=True)
class Suggestion:
    """One image worth a look: its store id and path, the score it ranks by, the box that earned it
    (x1, y1, x2, y2 in the image's pixels; None when nothing did) and why, in words."""

    image_id: int
    path: Path
    score: float
    box: tuple[float, float, float, float] | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "image": str(self.path),
            "score": self.score,
            "box": None if self.box is None else list(self.box),
            "why": self.why,
        }


def check_class(predictor: Predictor, class_name: str | None) -> None:
    """:class:`QuickstudyError` when ``class_name`` is given and the model does not know it."""
    if class_name is not None and class_name not in predictor.classes:
        raise QuickstudyError(
            f"class {class_name!r} is not in the model ({', '.join(predictor.classes)}); "
            "learn it from the boxes you have marked first (`quickstudy learn`, or Teach on the page)"
        )


def rank_images(
    predictor: Predictor,
    samples: Sequence[Any],
    class_name: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Suggestion]:
    """``samples`` (store samples: ``image_id``, ``path``) ranked highest score first: most likely to
    hold a defect no known type explains, or, with ``class_name``, one of that class (see the module's
    docstring for the scores). Ties keep the samples' order. ``progress`` is told the share of the
    samples ranked after each chunk."""
    check_class(predictor, class_name)
    suggestions: list[Suggestion] = []
    for chunk in _chunks(samples):
        paths = [s.path for s in chunk]
        outs = predictor.raw(paths)
        if class_name is None:
            found = [_unexplained(predictor, out) for out in outs]
        else:
            found = [_of_class(predictor, out, class_name) for out in outs]
        suggestions += [
            Suggestion(s.image_id, Path(s.path), score, box, why)
            for s, (score, box, why) in zip(chunk, found, strict=True)
        ]
        if progress is not None:
            progress(len(suggestions) / len(samples))
    return sorted(suggestions, key=lambda s: -s.score)


def suggest_images(
    predictor: Predictor,
    store: Any,
    class_name: str | None = None,
    n: int = 20,
    progress: Callable[[float], None] | None = None,
) -> tuple[list[Suggestion], int]:
    """The ``n`` unlabelled (not checked) images of the label ``store`` that :func:`rank_images` ranks
    first, and how many unlabelled images it ranked; :class:`QuickstudyError` when every image is
    checked. What ``quickstudy suggest`` lists and the server's suggest job returns."""
    unlabelled = [s for s in store.samples() if not s.checked]
    if not unlabelled:
        raise QuickstudyError(f"{store.path}: every image is checked; nothing is waiting for a look")
    return rank_images(predictor, unlabelled, class_name, progress)[:n], len(unlabelled)


def _chunks(samples: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(samples), CHUNK):
        yield samples[start : start + CHUNK]


Found = tuple[float, tuple[float, float, float, float] | None, str]


def _unexplained(predictor: Predictor, out: dict[str, torch.Tensor]) -> Found:
    """The image's highest-scoring ``unknown`` detection at any score."""
    unknown = predictor.model.memory.unknown_detections(out)
    if not unknown:
        return 0.0, None, "every region is normal or close to a known type"
    best = max(unknown, key=lambda d: d.score)
    abnormal = "" if best.abnormality is None else f", abnormality {best.abnormality:.2f}"
    why = f"unknown at defect score {best.score:.2f} (similarity to the nearest type {best.similarity:.2f}{abnormal})"
    return best.score, best.box, why


def _of_class(predictor: Predictor, out: dict[str, torch.Tensor], class_name: str) -> Found:
    """The image's highest detection score of ``class_name``."""
    mine = torch.nonzero(out["labels"] == predictor.classes.index(class_name)).flatten()
    if not mine.numel():
        return 0.0, None, f"no {class_name} detection"
    index = int(mine[out["scores"][mine].argmax()])
    score = float(out["scores"][index])
    x1, y1, x2, y2 = (float(v) for v in out["boxes"][index])
    return score, (x1, y1, x2, y2), f"{class_name} score {score:.2f}"
