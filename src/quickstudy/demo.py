"""The whole quickstudy story in a few minutes, on the built-in defect line or a VOC dataset.

1. make the data (or read ``--data``) and import it into a fresh label store;
2. train the detector on the known types, with half of their boxes carrying no class label;
3. a new type appears: it is reported as ``unknown``; ``learn`` it from 5 images; it is recognised;
4. split one type into two sub-types, relabel 5 images of each, ``learn`` them;
5. evaluate and write ``report.html``.

>>> result = run_demo(DemoSettings(out=Path("runs/demo")))  # doctest: +SKIP
>>> result.report, result.steps["3 · new type"]["named right after learning"]  # doctest: +SKIP

On the built-in line (:mod:`quickstudy.data.synthetic`) the known types are ``line`` (scratches and
inclusions, labelled as one type at first), ``pit`` and ``stain``; the new type is ``crack``; the
split is ``line -> scratch, inclusion``. On NEU-DET the new types are P3's NOVEL classes and the
split is ``scale -> crazing, rolled-in_scale``. Any other VOC dataset: the last class is new, the
first two are merged and later split. The story is the same code either way: the first two
classes of ``split_types`` are merged in the taxonomy before training, and every label the story
"discovers" later (new types, relabelled sub-types) is the dataset's own.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.errors import QuickstudyError
from quickstudy.labels.formats.voc import read_voc
from quickstudy.labels.known import NEU_CLASSES, NEU_NOVEL, neu_split
from quickstudy.labels.records import ImportedBox, ImportedImage, Sample
from quickstudy.labels.store import Store

LINE_TYPES = ("scratch", "inclusion", "pit", "stain", "crack")
LINE_NEW = ("crack",)
LINE_SPLIT = ("scratch", "inclusion")
LINE_SIZE = 96
DEMO_MARKER = ".quickstudy-demo"
LINE_MIN_BOX = 8  # boxes as a person draws them: a margin around hairlines
NEU_SPLIT = ("crazing", "rolled-in_scale")


@dataclass
class DemoSettings:
    """How big the story is. The defaults are sized for about 5 minutes on an idle 2-core CPU
    (measured: benchmarks/results/demo.md)."""

    out: Path = Path("runs/demo")
    data: Path | None = None  # a VOC dataset instead of the built-in line
    seed: int = 0
    shots: int = 5  # images per new type and per sub-type
    unlabelled_fraction: float = 0.5
    image_size: int | None = None  # the line's images and the detector's input (default: 96, or the data's)
    limit: int | None = None  # --data: every k-th image so that about this many remain (a quick look)
    # the built-in line
    train_images: int = 300
    test_images: int = 100
    # the detector: small batches, as the number of steps (not of images seen) limits it on this line
    # (benchmarks/results/unknowns.md: batch 32 → 4 at the same 80 epochs, known mAP50 0.34 → 0.56)
    epochs: int = 80
    batch_size: int = 4
    lr: float = 2.5e-3
    synthetic_defects: float = 0.0  # quickstudy.detect.data.paste_synthetic_defects
    squeeze: float = 0.0  # quickstudy.detect.data.squeeze_images
    proposals_per_level: int = 0  # quickstudy.detect.model.DetectorConfig.proposals_per_level
    # the recognition head also reads the stride-4 stage (`train --fine-recognition`): the line's
    # cracks are 1-2 px wide at 96 px (benchmarks/results/unknowns.md)
    fine_recognition: bool = True
    # step 3's `learn --adapt-localizer` for the new type (None: learn decides by itself)
    adapt_localizer: bool | None = None
    # steps 3 and 4: `learn --adapt-recognizer` (the recognition head tuned on each type's support;
    # None: learn decides by itself)
    adapt_recognizer: bool | None = None
    arch: str = "tiny"  # a detector size preset (quickstudy.detect.model.ARCHITECTURES)
    device: str = "cpu"
    # torch's CPU threads (None: torch's default). One: the tiny detector's batches of 4 gain little
    # from more, and on a shared CPU two threads wait on each other (the default run's training was
    # about 20x slower with two at load 3-4; benchmarks/results/unknowns.md)
    threads: int | None = 1


@dataclass
class Scenario:
    """What the story does with a dataset: which types are new, which pair is split and how."""

    new_types: tuple[str, ...]
    split_types: tuple[str, str]
    coarse_name: str
    truth: dict[str, list[str]] = field(default_factory=dict)  # image path -> true class per box


@dataclass
class DemoResult:
    """What a demo run gives: the report's path, each step's numbers (the report's summary), how the
    test boxes of the new and the split types were named (shares of ``right``, ``unknown``,
    ``named other``, ``missed`` of ``boxes``), the evaluation of the final model on every test
    image (the report's metrics), and the story's numbers as ``summary.json`` beside the report
    holds them: ``known_map50`` (step 2, known types' test images), ``new_unknown_before`` and
    ``new_named_after`` (shares of the new type's test boxes reported ``unknown`` before learning and
    named right after), ``split_named_after`` (the sub-types' test boxes named right),
    ``false_alarms_per_image`` (the final model's detections matching no true box, per test image;
    all at the operating thresholds, matched at IoU ≥ 0.5) and ``seconds``."""

    report: Path
    steps: dict[str, Any]
    naming: dict[str, dict[str, Any]]
    evaluation: Any  # quickstudy.evaluate.detection.DetectionEvaluation (imported with torch, late)
    summary: dict[str, float]


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Run the five steps, printing each; the last line printed is the report's path. Torch runs on
    ``settings.threads`` threads meanwhile, and on as many as before afterwards."""
    import torch

    previous = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _run_demo(settings, console)
    finally:
        torch.set_num_threads(previous)


def _run_demo(settings: DemoSettings, console: Console | None) -> DemoResult:
    console = console or Console()
    out = settings.out
    store_path = out / "labels.qs"
    model_dir = out / "model"
    _fresh_folder(out)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}

    # 1 ------------------------------------------------------------------------------------------
    _step(console, 1, "the data, imported into a fresh label store")
    images, scenario = (
        _line_images(settings, out, console) if settings.data is None else _voc_images(settings)
    )
    base_types = _hide_labels(images, scenario, settings)
    store = Store.open(store_path)
    report = store.import_images(images, source=str(settings.data or "built-in defect line"))
    store.taxonomy.merge(list(scenario.split_types), scenario.coarse_name, author="demo")
    trained_types = [scenario.coarse_name if c in scenario.split_types else c for c in base_types]
    trained_types = list(dict.fromkeys(trained_types))
    stats = store.stats()
    metrics["1 · data"] = {
        "images": report.images,
        "boxes": report.boxes,
        "boxes without class": report.unlabelled_boxes,
        "train images": stats["splits"].get("train", {}).get("images", 0),
        "test images": stats["splits"].get("test", {}).get("images", 0),
    }
    console.print(f"  {report.images} images, {report.boxes} boxes ({report.unlabelled_boxes} without class)")
    console.print(f"  label store: {store_path}")
    console.print(f"  taxonomy: merged {' + '.join(scenario.split_types)} into '{scenario.coarse_name}'")
    console.print(f"  known types: {', '.join(trained_types)}; held back: {', '.join(scenario.new_types)}")

    # 2 ------------------------------------------------------------------------------------------
    # torch loads here, not at import: registering the command keeps `quickstudy --help` quick
    from quickstudy.detect.evaluation import detector_evaluation, evaluate_detector
    from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.training import train_detector

    _step(console, 2, f"train the detector on {len(trained_types)} types, half of their boxes without class")
    config = DetectorConfig(
        **ARCHITECTURES[settings.arch],
        image_size=_image_size(settings, images),
        fine_recognition=settings.fine_recognition,
        proposals_per_level=settings.proposals_per_level,
    )
    tic = time.perf_counter()
    train_detector(
        store,
        model_dir,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        synthetic_defects=settings.synthetic_defects,
        squeeze=settings.squeeze,
        classes=trained_types,
        device=settings.device,
        config=config,
        seed=settings.seed,
    )
    train_seconds = time.perf_counter() - tic
    predictor = Predictor.from_dir(model_dir, device=settings.device)
    test = store.samples("test")
    known_test = [s for s in test if all(b.allowed <= set(trained_types) for b in s.boxes)]
    scores = evaluate_detector(predictor, known_test)
    metrics["2 · train"] = {
        "seconds": round(train_seconds, 1),
        "epochs": settings.epochs,
        "test images (known types only)": len(known_test),
        "mAP50": scores["mAP50"],
        **{f"AP50 {name}": value for name, value in scores["AP50"].items()},
    }
    console.print(
        f"  trained in {train_seconds:.0f} s; {len(known_test)} test images: mAP50 {scores['mAP50']:.3f}"
    )
    console.print("  " + ", ".join(f"AP50 {name} {value:.3f}" for name, value in scores["AP50"].items()))

    # 3 ------------------------------------------------------------------------------------------
    _step(console, 3, f"a new type appears: {', '.join(scenario.new_types)}")
    new_test = [s for s in test if any(scenario.truth[str(s.path)].count(t) for t in scenario.new_types)]
    before = _naming(predictor, new_test, scenario, scenario.new_types)
    console.print(
        f"  before learning, {before['boxes']} {'/'.join(scenario.new_types)} boxes in test images:"
    )
    console.print(_naming_text(before))
    tic = time.perf_counter()
    for name in scenario.new_types:
        _learn(model_dir, store, name, _support_images(store, scenario, name, settings), settings, True)
    learn_seconds = time.perf_counter() - tic
    predictor = Predictor.from_dir(model_dir, device=settings.device)
    after = _naming(predictor, new_test, scenario, scenario.new_types)
    console.print(f"  learned from {settings.shots} images each in {learn_seconds:.1f} s; after learning:")
    console.print(_naming_text(after))
    metrics["3 · new type"] = {
        "boxes": before["boxes"],
        "unknown before learning": before["unknown"],
        "named as a known type before": before["named other"],
        "seconds to learn": round(learn_seconds, 2),
        "named right after learning": after["right"],
        "unknown after learning": after["unknown"],
    }

    # 4 ------------------------------------------------------------------------------------------
    sub_a, sub_b = scenario.split_types
    _step(console, 4, f"split '{scenario.coarse_name}' into {sub_a} and {sub_b}")
    store.taxonomy.split(scenario.coarse_name, [sub_a, sub_b], author="demo")
    tic = time.perf_counter()
    for name in (sub_a, sub_b):
        support = _support_images(store, scenario, name, settings)
        _relabel(store, scenario, support, name)
        _learn(model_dir, store, name, support, settings, False)
    split_seconds = time.perf_counter() - tic
    predictor = Predictor.from_dir(model_dir, device=settings.device)
    split_test = [s for s in test if any(scenario.truth[str(s.path)].count(t) for t in scenario.split_types)]
    split_naming = _naming(predictor, split_test, scenario, scenario.split_types)
    partial = store.stats()["partial_label_sets"]
    console.print(f"  relabelled {settings.shots} images of each, learned them in {split_seconds:.1f} s")
    console.print(f"  {sum(partial.values())} other boxes keep the partial label {{{sub_a}, {sub_b}}}")
    console.print(f"  {split_naming['boxes']} test boxes of the two:")
    console.print(_naming_text(split_naming))
    metrics["4 · split"] = {
        "boxes with partial label": sum(partial.values()),
        "seconds to learn": round(split_seconds, 2),
        "sub-type boxes named right": split_naming["right"],
    }

    # 5 ------------------------------------------------------------------------------------------
    # imported here: it loads matplotlib, which the other steps do not need
    from quickstudy.evaluate.report import (
        ReportData,
        prediction_row,
        taxonomy_history_rows,
        truth_row,
        write_report,
    )

    _step(console, 5, "evaluate and write the report")
    console.print(f"  {len(test)} test images, every type with its true class")
    truly_labelled = [_truly_labelled(sample, scenario) for sample in test]
    evaluation, detections = detector_evaluation(predictor, truly_labelled)
    console.print(f"  mAP50 {evaluation.metrics['mAP50']:.3f} over {len(predictor.classes)} types")
    false_alarms = _false_alarms_per_image(predictor, test)
    console.print(f"  {false_alarms:.2f} false alarms per test image (detections on no true box)")
    metrics["total seconds"] = round(time.perf_counter() - started, 1)
    summary = {
        "known_map50": scores["mAP50"],
        "new_unknown_before": before["unknown"],
        "new_named_after": after["right"],
        "split_named_after": split_naming["right"],
        "false_alarms_per_image": false_alarms,
        "seconds": metrics["total seconds"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    path = write_report(
        out / "report.html",
        ReportData(
            title=f"quickstudy demo on {settings.data}"
            if settings.data
            else "quickstudy demo: the built-in defect line",
            evaluation=evaluation,
            ground_truth=[truth_row(sample) for sample in truly_labelled],
            predictions=[prediction_row(found) for found in detections],
            taxonomy_history=taxonomy_history_rows(store),
            summary=metrics,
            command=" ".join(["quickstudy", *sys.argv[1:]]) if sys.argv else "quickstudy demo",
        ),
    )
    store.close()
    console.print(f"  done in {metrics['total seconds']:.0f} s")
    console.print(str(path), soft_wrap=True, markup=False, highlight=False)  # whole, on one line
    naming = {
        "new type before learning": before,
        "new type after learning": after,
        "sub-types after learning": split_naming,
    }
    return DemoResult(path, metrics, naming, evaluation, summary)


def _fresh_folder(out: Path) -> None:
    """An empty ``out``: a previous demo's run there is replaced, anything else is left alone."""
    marker = out / DEMO_MARKER
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise QuickstudyError(f"{out}: not empty and not a previous demo run; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `quickstudy demo`, which replaces this folder on its next run\n")


# --- the data ----------------------------------------------------------------------------------


def _line_images(settings: DemoSettings, out: Path, console: Console) -> tuple[list[ImportedImage], Scenario]:
    """Write the built-in line as VOC under ``out/line/{train,test}`` and read it back."""
    line = SyntheticLine(
        seed=settings.seed,
        size=settings.image_size or LINE_SIZE,
        defect_types=LINE_TYPES,
        min_box_side=LINE_MIN_BOX,
    )
    images: list[ImportedImage] = []
    scenario = Scenario(LINE_NEW, LINE_SPLIT, "line")
    parts = (("train", 0, settings.train_images), ("test", 100_000, settings.test_images))
    for split, start, count in parts:
        folder = out / "line" / split
        for index in track(
            range(start, start + count), description=f"  drawing {split} images", console=console
        ):
            line.write_voc(folder, 1, start=index)
        for image in read_voc(folder):
            image.split = split
            images.append(image)
    for image in images:
        scenario.truth[str(image.path.resolve())] = [str(box.label) for box in image.boxes]
    return images, scenario


def _voc_images(settings: DemoSettings) -> tuple[list[ImportedImage], Scenario]:
    """A user's VOC dataset: NEU-DET gets P1's split and P3's new types; others the last class as
    new, the first two classes split, and every fifth image as test."""
    assert settings.data is not None
    images = read_voc(settings.data)
    if settings.limit:
        images = images[:: max(1, len(images) // settings.limit)]
    names = sorted({str(box.label) for image in images for box in image.boxes if isinstance(box.label, str)})
    if set(names) == set(NEU_CLASSES):
        scenario = Scenario(NEU_NOVEL, NEU_SPLIT, "scale")
        for image in images:
            image.split = neu_split(image.path)
    else:
        if len(names) < 4:
            raise QuickstudyError(
                f"{settings.data}: the demo needs at least 4 classes (two to split, one new, one more); "
                f"found {len(names)}: {', '.join(names)}"
            )
        scenario = Scenario((names[-1],), (names[0], names[1]), f"{names[0]}+{names[1]}")
        for index, image in enumerate(images):
            image.split = "test" if index % 5 == 0 else "train"
    for image in images:
        if any(not isinstance(box.label, str) for box in image.boxes):
            raise QuickstudyError(f"{image.source}: the demo needs a dataset whose every box has one class")
        scenario.truth[str(image.path.resolve())] = [str(box.label) for box in image.boxes]
    return images, scenario


def _hide_labels(images: list[ImportedImage], scenario: Scenario, settings: DemoSettings) -> list[str]:
    """Remove the class (keep the box) of a random ``unlabelled_fraction`` of the known types' boxes
    in training images; return the known types."""
    rng = np.random.default_rng(settings.seed)
    known = sorted({t for types in scenario.truth.values() for t in types} - set(scenario.new_types))
    for image in images:
        if image.split != "train":
            continue
        image.boxes = [
            ImportedBox(box.xyxy, None)
            if box.label in known and rng.random() < settings.unlabelled_fraction
            else box
            for box in image.boxes
        ]
    return known


def _image_size(settings: DemoSettings, images: Sequence[ImportedImage]) -> int:
    if settings.image_size:
        return settings.image_size
    return LINE_SIZE if settings.data is None else max(max(i.width, i.height) for i in images[:50])


# --- the steps' pieces -------------------------------------------------------------------------


def _step(console: Console, number: int, title: str) -> None:
    console.print(f"\n[bold]Step {number}/5[/bold] · {title}")


def _support_images(store: Store, scenario: Scenario, name: str, settings: DemoSettings) -> list[Any]:
    """``shots`` training images (store samples) holding a true box of ``name``, drawn with the seed."""
    candidates = [s for s in store.samples("train") if name in scenario.truth[str(s.path)]]
    if len(candidates) < settings.shots:
        raise QuickstudyError(f"{store.path}: only {len(candidates)} training images hold '{name}'")
    rng = np.random.default_rng([settings.seed, zlib.crc32(name.encode())])
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=settings.shots, replace=False))]


def _learn(
    model_dir: Path, store: Store, name: str, support: Sequence[Any], settings: DemoSettings, new_type: bool
) -> None:
    """``quickstudy learn`` of ``name`` from ``support`` as the settings say (``adapt_localizer`` is
    step 3's, for the ``new_type``)."""
    from quickstudy.detect.fewshot import learn_class

    learn_class(
        model_dir,
        store,
        name,
        images=[s.path for s in support],
        localizer=settings.adapt_localizer if new_type else None,
        recognizer=settings.adapt_recognizer,
        device=settings.device,
    )


def _relabel(store: Store, scenario: Scenario, samples: Sequence[Any], name: str) -> None:
    """What a person does after a split: give the boxes of ``name`` in these images their new class."""
    for sample in samples:
        for box, true_name in zip(sample.boxes, scenario.truth[str(sample.path)], strict=True):
            if true_name == name:
                store.set_label(box.box_id, name, author="demo")


def _truly_labelled(sample: Sample, scenario: Scenario) -> Sample:
    """``sample`` with each box's true class, which the store may hold only as a partial label."""
    names = scenario.truth[str(sample.path)]
    boxes = [replace(box, allowed=frozenset({name})) for box, name in zip(sample.boxes, names, strict=True)]
    return replace(sample, boxes=boxes)


# the demo's words for :data:`~quickstudy.evaluate.matching.NAMING_OUTCOMES`
_SHOWN = {"named_right": "right", "unknown": "unknown", "named_other": "named other", "missed": "missed"}


def _naming(
    predictor: Any, samples: Sequence[Any], scenario: Scenario, types: Sequence[str]
) -> dict[str, Any]:
    """How the true boxes of ``types`` are named: right, ``unknown``, another type, or missed, each
    matched to the detections at the model's operating thresholds as ``quickstudy eval`` matches them
    (:func:`~quickstudy.detect.evaluation.box_naming`)."""
    from quickstudy.detect.evaluation import box_naming

    truly = [_truly_labelled(s, scenario) for s in samples]
    counts = box_naming(truly, predictor.predict([s.path for s in samples]))
    outcome = sum((counts.get(name, Counter()) for name in types), Counter())
    total = sum(outcome.values())
    return {
        "boxes": total,
        **{shown: outcome[key] / total if total else 0.0 for key, shown in _SHOWN.items()},
    }


def _false_alarms_per_image(predictor: Any, samples: Sequence[Any]) -> float:
    """Detections at the model's operating thresholds that overlap no true box (of any class) at
    IoU ≥ 0.5, per image."""
    import torch
    from torchvision.ops import box_iou

    alarms = 0
    for sample, found in zip(samples, predictor.predict([s.path for s in samples]), strict=True):
        overlaps = box_iou(
            torch.tensor([d.box for d in found], dtype=torch.float64).reshape(-1, 4),
            torch.tensor([b.xyxy for b in sample.boxes], dtype=torch.float64).reshape(-1, 4),
        )
        alarms += int((overlaps.amax(1, keepdim=True) < 0.5).sum()) if overlaps.shape[1] else len(found)
    return alarms / len(samples) if samples else 0.0


def _naming_text(result: dict[str, Any]) -> str:
    return (
        f"    {result['right']:.0%} named right · {result['unknown']:.0%} reported unknown · "
        f"{result['named other']:.0%} named as another type · {result['missed']:.0%} missed"
    )
