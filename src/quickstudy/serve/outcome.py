"""What a learn job changed, for the person who pressed "learn": before (the previous version) and
after (the new one), how the marked boxes of the type are named, and image precision/recall.

On the held-out images: those holding marked boxes of the type that were not support. Each true box
is matched to the detections (at the operating thresholds) by :func:`match_detections` (IoU ≥ 0.5,
best score first, any class) and counted as named right, reported ``unknown``, named as another
type, or missed. Image recall and precision of "the image holds the type" count an image flagged
when it has a detection of the type; precision also counts checked images outside TRAIN known to
hold no box of the type (TRAIN's were used to set the new threshold). Where no image is held out,
the support images' leave-one-out result stands in: each support image predicted by the new
version with the type's prototype learned from the other support images only (the new version's
network and threshold, which did see it: slightly optimistic where the localizer was adapted).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quickstudy.detect.evaluation import box_naming
from quickstudy.detect.fewshot import add_classes, embed_support, support_boxes
from quickstudy.detect.model import detector_from_payload
from quickstudy.detect.predictor import Detection, Predictor
from quickstudy.detect.versions import ModelFolder
from quickstudy.evaluate.matching import NAMING_OUTCOMES
from quickstudy.evaluate.operating import precision_recall_at
from quickstudy.labels.records import Sample
from quickstudy.labels.store import Store

# images predicted per side at most (evenly spread): a report, not a benchmark
MAX_POSITIVES = 300
MAX_NEGATIVES = 200
# images per predict call, so that progress is reported between them
CHUNK = 16


def _spread(items: list[Sample], limit: int) -> list[Sample]:
    if len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _predict(
    predictor: Predictor, paths: Sequence[str | os.PathLike[str]], report: Callable[[float], None]
) -> list[list[Detection]]:
    """``predictor.predict(paths)``, a chunk at a time, reporting the share of images done."""
    found: list[list[Detection]] = []
    report(0.0)
    for start in range(0, len(paths), CHUNK):
        found += predictor.predict(list(paths[start : start + CHUNK]))
        report(len(found) / len(paths))
    return found


def naming(
    samples: Sequence[Sample], detections: Sequence[Sequence[Detection]], name: str, threshold: float
) -> dict[str, Any]:
    """How the boxes marked ``name`` in ``samples`` are named by ``detections``, and the image
    precision and recall of ``name`` (an image flagged when a detection of it reaches ``threshold``)."""
    outcome = box_naming(samples, detections).get(name, Counter())
    image_scores, holds = [], []
    for sample, found in zip(samples, detections, strict=True):
        holds.append(any(box.allowed == {name} for box in sample.boxes))
        image_scores.append(max((d.score for d in found if d.class_name == name), default=0.0))
    total = sum(outcome.values())
    precision, recall = precision_recall_at(image_scores, holds, threshold) if samples else (np.nan, np.nan)
    return {
        "boxes": total,
        **{
            key: {"count": outcome[key], "share": outcome[key] / total if total else None}
            for key in NAMING_OUTCOMES
        },
        "image_precision": None if np.isnan(precision) else precision,
        "image_recall": None if np.isnan(recall) else recall,
    }


def learn_outcome(
    model_dir: str | os.PathLike[str],
    store: Store,
    name: str,
    support_images: Sequence[str | os.PathLike[str]] | None,
    previous: int,
    version: int,
    adapt: bool = False,
    device: str = "cpu",
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Before (``previous``) and after (``version``) on the held-out images, or the support images'
    leave-one-out result where there are none (see the module's text). ``progress``, if given, is
    called with ``"before"`` or ``"after"`` and the share of that side's images predicted."""
    report = progress if progress is not None else lambda side, done: None

    def side(name: str) -> Callable[[float], None]:
        return lambda done: report(name, done)

    support = support_boxes(store, name, support_images)
    used = {Path(path).resolve() for path, _ in support}
    samples = store.samples()
    held_out = [
        s for s in samples if Path(s.path).resolve() not in used and any(b.allowed == {name} for b in s.boxes)
    ]
    before_model = Predictor.from_dir(model_dir, previous, device)
    after_model = Predictor.from_dir(model_dir, version, device)
    threshold = after_model.model.memory.threshold(name)
    if held_out:
        negatives = [
            s
            for s in samples
            if s.checked
            and s.split != "train"
            and Path(s.path).resolve() not in used
            and all(b.allowed and name not in b.allowed for b in s.boxes)
        ]
        positives = _spread(held_out, MAX_POSITIVES)
        chosen = positives + _spread(negatives, MAX_NEGATIVES)
        paths = [s.path for s in chosen]
        return {
            "basis": "held-out",
            "note": f"{len(positives)} of {len(held_out)} held-out images holding {name!r} boxes "
            f"(not support), and {len(chosen) - len(positives)} checked images outside TRAIN without it",
            "images": len(positives),
            "negatives": len(chosen) - len(positives),
            "before": {
                "version": previous,
                **naming(chosen, _predict(before_model, paths, side("before")), name, threshold),
            },
            "after": {
                "version": version,
                **naming(chosen, _predict(after_model, paths, side("after")), name, threshold),
            },
        }
    by_path = {Path(s.path).resolve(): s for s in samples}
    support_samples = [by_path[Path(path).resolve()] for path, _ in support]
    if len(support) < 2:
        return {
            "basis": "none",
            "note": f"no image outside the support holds a marked {name!r} box, and with one support "
            "image there is no leave-one-out: mark the type on more images to see how it is named",
            "images": 0,
            "negatives": 0,
            "before": None,
            "after": None,
        }
    before = _predict(before_model, [path for path, _ in support], side("before"))
    after = _leave_one_out(ModelFolder(model_dir), version, name, support, adapt, device, side("after"))
    return {
        "basis": "leave-one-out",
        "note": f"no image outside the support holds a marked {name!r} box yet: each of the "
        f"{len(support)} support images predicted with the type learned from the others",
        "images": len(support),
        "negatives": 0,
        "before": {"version": previous, **naming(support_samples, before, name, threshold)},
        "after": {
            "version": version,
            **naming(support_samples, after, name, threshold),
            "leave_one_out": True,
        },
    }


def _leave_one_out(
    folder: ModelFolder,
    version: int,
    name: str,
    support: list[tuple[Path, list[tuple[float, float, float, float]]]],
    adapt: bool,
    device: str,
    report: Callable[[float], None],
) -> list[list[Detection]]:
    model = detector_from_payload(folder.load(version), device)
    embeddings = [embed_support(model, [item]) for item in support]
    learned = model.memory
    found = []
    report(0.0)
    for k, (path, _) in enumerate(support):
        model.memory = learned
        add_classes(model, {name: torch.cat([e for j, e in enumerate(embeddings) if j != k])}, adapt=adapt)
        found.append(Predictor(model).predict([path])[0])
        report((k + 1) / len(support))
    model.memory = learned
    return found
