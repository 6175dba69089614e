#!/usr/bin/env python3
"""P3: NEU-DET, new defect types — learn pitted_surface and scratches from K images each.

The base detector trains on the TRAIN images all of whose boxes are BASE classes (``--classes``).
Then, for K in {1, 5, 10} and seeds 0-4, K TRAIN images per novel class (from that class's folder,
with all their boxes of the class) are the support set, and the ways of adding the classes
(``--methods``, all by default) are scored on all of TEST: nAP50 (mean AP50 over NOVEL), bAP50 (over
BASE; "before" = the base model), the share of novel TEST boxes the localizer proposes at all
(IoU >= 0.5), image-level precision/recall per novel class (threshold as ``quickstudy learn`` sets
it, ``detect.fewshot.threshold_for_precision``: where the class's own support images are found,
raised where that flags too many of up to 200 TRAIN images known to hold no such box), seconds to
add both classes:

- ``prototype``: robust mean of the support embeddings (``quickstudy learn``);
- ``prototype_adapt``: the same, then the new prototypes tuned on the support (``learn --adapt``);
- ``localizer``: prototypes as ``prototype``, and a second localization head, the learned types',
  tuned from the base one on the support images' boxes with the base training images replayed,
  backbone and base head frozen, locations along the middle of an elongated support box positive too
  (``--localizer-center-share``; ``detect.fewshot.adapt_localizer``); the novel classes' detections
  come from it, the base classes' from the base head;
- ``localizer_recognizer``: ``localizer``, then the recognition head's MLP tuned on the support boxes
  with 64 base training images' boxes replayed and distilled, the prototypes made again from the
  tuned embeddings, each novel class's unknown cut from held-out support images and the common cuts
  moved with 64 other base images' boxes (``detect.fewshot.tune_recognizer``;
  ``learn --adapt-localizer --adapt-recognizer``);
- ``localizer_recognizer_chosen``: the same where held-out support images say tuning helps, else
  ``localizer`` (``learn --adapt-localizer``, the recognizer left to choose; the run's
  ``recognizer_note`` says which);
- ``tfa``: TFA-style fine-tuning — new random class rows, all rows fine-tuned on a balanced K-shot
  set of base + novel boxes (network frozen, as TFA freezes all but the last layer).

Before learning, the novel TEST boxes are matched (IoU >= 0.5) to the base model's named detections
to measure how often a new type shows up as ``unknown``; after the methods that adapt the localizer,
what each type's TEST boxes are called (``boxes_called``: its own name, another type, ``unknown`` or
missed, at the operating thresholds; ``boxes_called_common_cut`` the same with no class given its own
unknown cut) and the kinds of each novel class's false positives ranked above half its boxes found
(``error_kinds``: ``p2_error_kinds.ranked_error_kinds``). Class-agnostic proposals on TEST are computed
once for the methods that leave the network as it is; the two that adapt the localizer recompute them.

GPU (H100):  .venv/bin/python benchmarks/p3_neu_fewshot_detect.py --device cuda --epochs 24 --json-out p3.json
CPU (tiny):  .venv/bin/python benchmarks/p3_neu_fewshot_detect.py --arch tiny --epochs 12 --threads 2 \\
                 --json-out p3_cpu.json
P3-u:        the same with ``--init RUN``, a ``quickstudy pretrain --backbone detector`` run on every TRAIN
             image without labels or boxes (allowed in P3-u); the base model starts from it.
CPU smoke:   .venv/bin/python benchmarks/p3_neu_fewshot_detect.py --arch tiny --epochs 1 --limit 48 \\
                 --test-limit 24 --shots 1 --seeds 0
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from p2_error_kinds import ranked_error_kinds
from p2_neu_detect import add_training_arguments, neu_store, training_options

from quickstudy.detect.data import DetectionSet
from quickstudy.detect.evaluation import box_names, box_naming, ground_truth, proposal_recall
from quickstudy.detect.fewshot import (
    LOCALIZER_CENTER_SHARE,
    LOCALIZER_DISTILLATION,
    LOCALIZER_STEPS,
    adapt_localizer,
    add_classes,
    embed_support,
    finetune_classifier,
    known_negatives,
    pool_known,
    pool_support_images,
    tune_recognizer,
)
from quickstudy.detect.fewshot import (
    threshold_for_precision as learned_threshold,
)
from quickstudy.detect.model import DefectDetector
from quickstudy.detect.predictor import UNKNOWN, Predictor
from quickstudy.detect.training import select_samples, split_validation, train_detector
from quickstudy.evaluate.detection import coco_metrics, image_level, image_scores, image_truth
from quickstudy.evaluate.operating import threshold_for_precision
from quickstudy.labels.known import NEU_BASE, NEU_NOVEL, neu_class_of
from quickstudy.train import describe_device

METHODS = (
    "prototype",
    "prototype_adapt",
    "localizer",
    "localizer_recognizer",
    "localizer_recognizer_chosen",
    "tfa",
)
ADAPTS_LOCALIZER = ("localizer", "localizer_recognizer", "localizer_recognizer_chosen")
TUNES_RECOGNIZER = ("localizer_recognizer", "localizer_recognizer_chosen")


def draw_support(train: list, classes: tuple[str, ...], k: int, seed: int) -> dict[str, list]:
    """K TRAIN samples per class from its folder that hold a box of the class (seeded)."""
    rng = np.random.default_rng(seed)
    support = {}
    for name in classes:
        folder = [
            s for s in train if neu_class_of(s.path) == name and any(b.allowed == {name} for b in s.boxes)
        ]
        support[name] = [folder[int(i)] for i in rng.choice(len(folder), size=k, replace=False)]
    return support


def marked_boxes(samples: list, name: str) -> list:
    """``(path, boxes labelled name)`` per sample: the support set as ``quickstudy learn`` takes it."""
    return [(s.path, [b.xyxy for b in s.boxes if b.allowed == {name}]) for s in samples]


def novel_proposed(proposals: list, test: list) -> float:
    """Share of novel TEST boxes that some class-agnostic proposal overlaps with IoU >= 0.5."""
    return proposal_recall([[b.xyxy for b in s.boxes if b.allowed & set(NEU_NOVEL)] for s in test], proposals)


def score(
    classes: list[str], outputs: list, proposals: list, test: list, operating: dict[str, float]
) -> dict[str, Any]:
    """AP50 per class, nAP50, bAP50 and novel image-level precision/recall of a model's ``outputs``
    (``DefectDetector.classify`` of ``proposals``, per TEST image)."""
    named, agnostic = ground_truth(test, classes)
    report = coco_metrics(named, outputs, classes, agnostic)
    levels = image_level(named, outputs, classes, operating)
    truth, best = image_truth(named, len(classes)), image_scores(outputs, len(classes))
    index = {c: i for i, c in enumerate(classes)}
    ap = report["AP50"]
    return {
        "nAP50": statistics.mean(ap[c] or 0.0 for c in NEU_NOVEL)
        if all(c in ap for c in NEU_NOVEL)
        else None,
        "bAP50": statistics.mean(ap[c] or 0.0 for c in NEU_BASE),
        "novel_proposed": novel_proposed(proposals, test),
        "AP50": ap,
        "image_precision": {c: levels["image_precision"].get(c) for c in NEU_NOVEL},
        "image_recall": {c: levels["image_recall"].get(c) for c in NEU_NOVEL},
        # the curve's recall where image precision is 99% (the threshold picked on TEST: an upper bound)
        "image_recall_at_99_precision": {
            c: threshold_for_precision(best[:, index[c]].numpy(), truth[:, index[c]], 0.99).recall
            if c in index
            else None
            for c in NEU_NOVEL
        },
    }


def named_before(predictor: Predictor, outputs: list, test: list, types: tuple[str, ...]) -> dict[str, Any]:
    """How the base model names the TEST boxes of ``types`` at its operating thresholds, matched as
    ``quickstudy eval`` matches (:func:`~quickstudy.detect.evaluation.box_naming`): its own class
    (``right``), ``unknown``, another class
    (``base_class``: for novel boxes every name the model has), or not found."""
    naming = box_naming(test, [predictor.name_detections(out, None) for out in outputs])
    outcomes = sum((naming.get(name, Counter()) for name in types), Counter())
    counts = {
        "right": outcomes["named_right"],
        "unknown": outcomes[UNKNOWN],
        "base_class": outcomes["named_other"],
        "missed": outcomes["missed"],
    }
    total = sum(counts.values())
    found_total = total - counts["missed"]
    return {
        **{k: v / max(1, total) for k, v in counts.items()},
        "n_boxes": total,
        "unknown_of_found": counts["unknown"] / max(1, found_total),
    }


def add_novel(
    base: DefectDetector,
    method: str,
    support: dict[str, list],
    base_support: dict[str, list],
    seed: int,
    replay: DetectionSet | None = None,
    localizer: dict[str, Any] | None = None,
    known: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[DefectDetector, float, str, dict[str, list]]:
    """A copy of ``base`` with both novel classes added by ``method`` (``localizer``: keyword arguments
    of :func:`~quickstudy.detect.fewshot.adapt_localizer`; ``known``: pooled base boxes and their
    classes, :func:`~quickstudy.detect.fewshot.pool_known`, replayed and checked); seconds it took,
    the recognizer's note and its support images' outputs from the folds that held them out (for
    their thresholds, as ``learn`` sets them)."""
    model = copy.deepcopy(base)
    started = time.perf_counter()
    note, outputs = "", {}
    if method == "tfa":
        shots = {**base_support, **support}
        embeddings = {name: embed_support(model, marked_boxes(s, name)) for name, s in shots.items()}
        order = [*model.classes, *NEU_NOVEL]
        labels = torch.cat([torch.full((len(e),), order.index(n)) for n, e in embeddings.items()])
        finetune_classifier(model, torch.cat(list(embeddings.values())), labels, list(NEU_NOVEL), seed=seed)
    else:
        embedded = {name: embed_support(model, marked_boxes(s, name)) for name, s in support.items()}
        add_classes(model, embedded, adapt=method == "prototype_adapt")
        if method in ADAPTS_LOCALIZER:
            marked = [s for samples in support.values() for s in samples]
            images = DetectionSet.from_samples(marked, [], model.config.image_size)
            adapt_localizer(model, images, replay, classes=list(support), seed=seed, **(localizer or {}))
        if method in TUNES_RECOGNIZER:
            marks = {name: marked_boxes(s, name) for name, s in support.items()}
            pooled = {name: pool_support_images(model, m) for name, m in marks.items()}
            assert known is not None, f"{method} replays known boxes"
            paths = {name: [path for path, _ in m] for name, m in marks.items()}
            note, outputs = tune_recognizer(
                model, pooled, *known, choose=method == "localizer_recognizer_chosen", paths=paths
            )
    return model, time.perf_counter() - started, note, outputs


def boxes_called(model: DefectDetector, outputs: list, test: list) -> dict[str, dict[str, int]]:
    """Per novel and base type, what its TEST boxes are called by ``model``'s memory at its operating
    thresholds from its ``outputs`` (per TEST image): its own name, another type's, ``unknown``, or
    ``missed`` (matched as ``quickstudy eval`` matches)."""
    called = box_names(test, [model.memory.name_detections(out, None) for out in outputs])
    return {
        c: {name or "missed": n for name, n in called.get(c, Counter()).most_common()}
        for c in NEU_NOVEL + NEU_BASE
    }


def with_memory(
    model: DefectDetector, operating: dict[str, float], common_cut: bool = False
) -> DefectDetector:
    """``model``'s network with its memory at ``operating`` thresholds; ``common_cut``: every class held
    to the memory's common ``unknown`` cut, none to its own."""
    named = copy.copy(model)  # the network shared; only the memory differs
    named.memory = model.memory.with_thresholds(operating, unknown_by_class={} if common_cut else None)
    return named


def novel_error_kinds(classes: list[str], outputs: list, test: list) -> dict[str, dict[str, Any]]:
    """Per novel class, a model's false positives (``outputs`` per TEST image) ranked above the point where
    half its TEST boxes are found, by kind (``p2_error_kinds.ranked_error_kinds``; another class's box:
    ``other_type``)."""
    kinds = {}
    for name in NEU_NOVEL:
        label = classes.index(name)
        own = [
            {"boxes": out["boxes"][out["labels"] == label], "scores": out["scores"][out["labels"] == label]}
            for out in outputs
        ]
        truth = [[b.xyxy for b in s.boxes if name in b.allowed] for s in test]
        others = [[b.xyxy for b in s.boxes if name not in b.allowed] for s in test]
        kinds[name] = ranked_error_kinds(own, truth, 0.5, others)
    return kinds


def base_replay(
    base: DefectDetector, train: list, limit: int | None = None, known: bool = True
) -> tuple[DetectionSet, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None]:
    """The images the base model was fitted on, replayed while the localizer adapts; and where ``known``,
    the base boxes replayed while the recognition head adapts and those it is checked on
    (:func:`~quickstudy.detect.fewshot.pool_known` of 64 of those images each, as ``learn`` replays and
    checks)."""
    fitted, _ = split_validation(select_samples(train, list(base.classes), limit))
    replay = DetectionSet.from_samples(fitted, [], base.config.image_size)
    if not known:
        return replay, None
    order = torch.randperm(len(fitted), generator=torch.Generator().manual_seed(0)).tolist()
    replayed, checked = ([fitted[i] for i in sorted(part)] for part in (order[:64], order[64:128]))
    return replay, (pool_known(base, replayed), pool_known(base, checked))


def novel_thresholds(
    model: DefectDetector, support: dict[str, list], store: Any, outputs: dict[str, list] | None = None
) -> dict[str, tuple[float, str]]:
    """Each novel class's operating threshold as ``quickstudy learn`` sets it (on ``outputs``, its
    support images' outputs from the folds that held them out, where the recognizer was tuned), and its
    note."""
    thresholds = {}
    for name, samples in support.items():
        marked = marked_boxes(samples, name)
        negatives = known_negatives(store, name, marked)
        thresholds[name] = learned_threshold(model, name, marked, negatives, (outputs or {}).get(name))
    return thresholds


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.mean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}

    out: dict[str, Any] = {
        "nAP50": stats([r["nAP50"] for r in runs]),
        "bAP50": stats([r["bAP50"] for r in runs]),
        "novel_proposed": stats([r["novel_proposed"] for r in runs]),
        "seconds": stats([r["seconds"] for r in runs]),
    }
    for key in ("boxes_called", "boxes_called_common_cut"):
        for c in NEU_NOVEL + NEU_BASE:
            called = sum((Counter(r[key][c]) for r in runs if key in r), Counter())
            if called:  # pooled over the seeds
                out[f"{key}_{c}"] = {name: n / called.total() for name, n in called.most_common()}
    for c in NEU_NOVEL:
        errors = sum((Counter(r["error_kinds"][c]["errors"]) for r in runs if "error_kinds" in r), Counter())
        if errors:  # pooled over the seeds
            out[f"error_kinds_{c}"] = dict(errors)
        for key in ("image_precision", "image_recall", "image_recall_at_99_precision"):
            values = [r[key][c] for r in runs if r[key][c] is not None]
            out[f"{key}_{c}"] = stats(values) if values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_arguments(parser)
    parser.add_argument("--shots", default="1,5,10")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--base-model", type=Path, help="reuse a base model folder instead of training one")
    parser.add_argument(
        "--proposals",
        type=int,
        help="proposals kept per image, overriding the base model's (an inference setting)",
    )
    parser.add_argument(
        "--normality-proposals",
        action="store_true",
        help="the normality memory's abnormal regions join the proposals (an inference setting)",
    )
    parser.add_argument(
        "--localizer-steps",
        type=int,
        default=LOCALIZER_STEPS,
        help=f"adapt_localizer's steps (default {LOCALIZER_STEPS})",
    )
    parser.add_argument(
        "--localizer-distill",
        type=float,
        default=LOCALIZER_DISTILLATION,
        help=f"adapt_localizer's distillation weight (default {LOCALIZER_DISTILLATION})",
    )
    parser.add_argument(
        "--localizer-center-share",
        type=float,
        default=LOCALIZER_CENTER_SHARE,
        help="adapt_localizer's centre share along the support's elongated boxes "
        f"(default {LOCALIZER_CENTER_SHARE}; 0: off)",
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="p3-"))
    store = neu_store(work / "neu.db", args.data)
    base_dir = args.base_model or work / "base"
    result: dict[str, Any] = {"protocol": "P3", "device": describe_device(args.device), "args": vars(args)}
    if args.base_model is None:
        started = time.perf_counter()
        train_detector(store, base_dir, **{**training_options(args), "classes": list(NEU_BASE)})
        result["base_train_seconds"] = time.perf_counter() - started
    predictor = Predictor.from_dir(base_dir, device=args.device)
    base = predictor.model
    if args.proposals:
        base.config.proposals = args.proposals
    if args.proposals_per_level is not None:  # train's option; on a reused base, an inference setting
        base.config.proposals_per_level = args.proposals_per_level
    if args.normality_proposals:
        base.config.normality_proposals = True
    train, test = store.samples("train"), store.samples("test")
    if args.test_limit:
        test = test[:: max(1, len(test) // args.test_limit)][: args.test_limit]
    test_paths = [s.path for s in test]
    proposals = predictor.proposals(test_paths)
    borrowed = statistics.median(predictor.operating.values())
    operating = {**predictor.operating, **dict.fromkeys(NEU_NOVEL, borrowed)}
    methods = args.methods.split(",")
    replay, known = base_replay(base, train, args.limit, known=bool(set(TUNES_RECOGNIZER) & set(methods)))
    named = base.classify(proposals)
    before = score(base.classes, named, proposals, test, operating)
    result["before"] = {k: before[k] for k in ("bAP50", "novel_proposed", "AP50")}
    result["novel_boxes_before_learning"] = named_before(predictor, named, test, NEU_NOVEL)
    # the other side of `unknown`: calibration allows at most 5% of held-out base boxes to be called so
    result["base_boxes_before_learning"] = named_before(predictor, named, test, NEU_BASE)
    print(
        "before:",
        json.dumps(result["before"]),
        "novel boxes:",
        json.dumps(result["novel_boxes_before_learning"]),
        "base boxes:",
        json.dumps(result["base_boxes_before_learning"]),
        flush=True,
    )

    localizer = {
        "steps": args.localizer_steps,
        "distill": args.localizer_distill,
        "center_share": args.localizer_center_share,
    }
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {} for m in methods}
    for k in (int(v) for v in args.shots.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            support = draw_support(train, NEU_NOVEL, k, seed)
            base_support = draw_support(train, NEU_BASE, k, seed)
            for method in methods:
                model, seconds, note, held_out = add_novel(
                    base,
                    method,
                    support,
                    base_support,
                    seed,
                    replay,
                    localizer,
                    known,
                )
                scored = Predictor(model).proposals(test_paths) if method in ADAPTS_LOCALIZER else proposals
                set_by_learn = novel_thresholds(model, support, store, held_out)
                learned = {**predictor.operating, **{c: t for c, (t, _) in set_by_learn.items()}}
                detected = model.classify(scored)
                report = score(model.classes, detected, scored, test, learned)
                report["seconds"] = seconds
                if method in TUNES_RECOGNIZER:
                    report["recognizer_note"] = note
                report["novel_thresholds"] = {c: learned[c] for c in NEU_NOVEL}
                report["novel_threshold_notes"] = {c: note for c, (_, note) in set_by_learn.items()}
                if method in ADAPTS_LOCALIZER:
                    report["boxes_called"] = boxes_called(with_memory(model, learned), detected, test)
                    common = with_memory(model, learned, common_cut=True)
                    report["boxes_called_common_cut"] = boxes_called(common, common.classify(scored), test)
                    report["error_kinds"] = novel_error_kinds(model.classes, detected, test)
                runs[method].setdefault(k, []).append(report)
                print(
                    f"K={k} seed={seed} {method}: nAP50 {report['nAP50']:.3f} bAP50 {report['bAP50']:.3f} "
                    f"novel proposed {report['novel_proposed']:.2f} ({seconds:.1f} s)",
                    flush=True,
                )
    result["runs"] = runs
    result["summary"] = {m: {f"K={k}": summarise(r) for k, r in by_k.items()} for m, by_k in runs.items()}
    # seconds to add both classes with K = 10 on the CPU, whatever device trained the model
    cpu_model = copy.deepcopy(base).cpu()
    support = draw_support(train, NEU_NOVEL, min(10, max(int(v) for v in args.shots.split(","))), 0)
    result["cpu_seconds_to_add_both_classes"] = {
        method: add_novel(cpu_model, method, support, {}, 0, replay, localizer, known)[1]
        for method in ("prototype", "localizer", "localizer_recognizer", "localizer_recognizer_chosen")
        if method in methods
    }
    result["cpu_threads"] = torch.get_num_threads()
    print(json.dumps({"before": result["before"], "summary": result["summary"]}, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
