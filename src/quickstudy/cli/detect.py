"""``quickstudy train | predict | eval | learn | suggest | models``: the defect detector."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from quickstudy.cli._common import (
    add_adapt_recognizer,
    add_amp,
    add_device,
    non_negative,
    print_json,
    print_table,
    share,
)
from quickstudy.errors import QuickstudyError


def _open_store(path: str) -> Any:
    from quickstudy.labels.store import Store

    if not Path(path).is_file():
        raise QuickstudyError(f"{path}: no such label store (create one with `quickstudy data import`)")
    return Store.open(path, create=False)


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise QuickstudyError("--classes: give at least one class name, e.g. --classes crazing,patches")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _pseudo_labels(text: str) -> float | str:
    return "off" if text == "off" else _fraction(text)


def check_train(args: argparse.Namespace) -> None:
    """The training options of :func:`add_training_options` that cannot go together."""
    _classes(args.classes)


def training_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """``train_detector``'s keywords from the options of :func:`add_training_options` (the benchmarks
    train through this too, so a measured number is what `quickstudy train` gives)."""
    from quickstudy.detect.model import ARCHITECTURES, DetectorConfig

    config = DetectorConfig(**ARCHITECTURES[args.arch], fine_recognition=args.fine_recognition)
    if args.proposals_per_level is not None:
        config.proposals_per_level = args.proposals_per_level
    if args.pseudo_labels is not None:
        config.pseudo_label_confidence = None if args.pseudo_labels == "off" else args.pseudo_labels
    # unset options take train_detector's defaults (the one place they are chosen, by measurement)
    given = {
        "weighting": args.weighting,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augment": args.augment,
        "photometric": args.photometric,
        "synthetic_defects": args.synthetic_defects,
        "squeeze": args.squeeze,
    }
    return {
        "epochs": args.epochs,
        "classes": _classes(args.classes),
        "limit": args.limit,
        "device": args.device,
        "config": config,
        "weights": args.weights,
        "seed": args.seed,
        "init": args.init,
        "hold_out": not args.fit_all,
        "amp": args.amp,
        "image_size": args.image_size,
        "channels": None if args.channels == "auto" else int(args.channels),
        "tiling": args.tiling,
        **{key: value for key, value in given.items() if value is not None},
    }


def cmd_train(args: argparse.Namespace) -> int:
    from quickstudy.detect.training import train_detector

    version = train_detector(
        _open_store(args.store), args.out, **training_keywords(args), workers=args.workers
    )
    print(f"wrote {Path(args.out) / 'versions' / f'v{version}.pt'} (current)")
    return 0


def _detections_json(path: str, detections: list) -> dict[str, Any]:
    return {"image": path, "detections": [d.to_dict() for d in detections]}


def cmd_predict(args: argparse.Namespace) -> int:
    from quickstudy.deploy.runtime import OnnxPredictor, is_export

    folders = [image for image in args.images if Path(image).is_dir()]
    if folders:
        raise QuickstudyError(
            f"{folders[0]}: is a folder; give its images, e.g. {Path(folders[0]) / '*.jpg'}"
        )
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise QuickstudyError(f"{missing[0]}: no such image file")
    paths = [Path(image) for image in args.images]
    if is_export(args.model):  # an ONNX export: onnxruntime, numpy and Pillow, no torch
        predictor: Any = OnnxPredictor(args.model)
    else:
        from quickstudy.detect.predictor import Predictor

        predictor = Predictor.from_dir(args.model, device=args.device)
    results = predictor.predict(paths, score_threshold=args.threshold)
    for note in predictor.notes.values():
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json([_detections_json(str(p), d) for p, d in zip(paths, results, strict=True)])
        return 0
    rows = [
        [str(p), d.class_name, f"{d.score:.3f}", " ".join(f"{v:.0f}" for v in d.box)]
        for p, found in zip(paths, results, strict=True)
        for d in found
    ]
    print_table("detections", ["image", "class", "score", "box (x1 y1 x2 y2)"], rows)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from quickstudy.detect.evaluation import detector_evaluation
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.versions import ModelFolder, check_taxonomy

    store = _open_store(args.store)
    note = check_taxonomy(ModelFolder(args.model).load(), store, args.model)
    if note:
        print(f"note: {note}", file=sys.stderr)
    samples = store.samples(args.split)
    if not samples:
        raise QuickstudyError(f"{args.store}: no images in split {args.split!r}")
    predictor = Predictor.from_dir(args.model, device=args.device)
    evaluation, detections = detector_evaluation(predictor, samples, target_precision=args.target_precision)
    report = evaluation.metrics
    if args.report:
        report["report"] = str(_write_report(args, store, samples, evaluation, detections))
    if args.json:
        print_json(report)
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [
        [c, fmt(report["AP50"][c]), fmt(report["image_precision"][c]), fmt(report["image_recall"][c])]
        for c in report["AP50"]
    ]
    print_table(
        f"{args.split}: mAP {report['mAP']:.3f}  mAP50 {report['mAP50']:.3f}  "
        f"class-agnostic AP50 {report['AP50_agnostic']:.3f}  AR100 {report['AR100_agnostic']:.3f}  "
        f"{report['ms_per_image']:.1f} ms/image",
        ["class", "AP50", "image precision", "image recall"],
        rows,
    )
    share = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    print_table(
        f"how each type's {args.split} boxes are named at the operating thresholds "
        "(a type the model lacks can only be unknown, another type or missed)",
        ["type", "boxes", "named right", "unknown", "another type", "missed"],
        [
            [
                name if n["known"] else f"{name} (new)",
                n["boxes"],
                *(share(n[key]) for key in ("named_right", "unknown", "named_other", "missed")),
            ]
            for name, n in report["naming"].items()
        ],
    )
    if args.target_precision is not None:
        points = {k: v for k, v in report["at_target_precision"].items() if k != "target"}
        print_table(
            f"image-level thresholds for precision ≥ {args.target_precision:g} on {args.split} "
            "(picked on these images; use one with `predict --threshold`)",
            ["class", "threshold", "precision", "recall", "images flagged", "reached"],
            [
                [
                    name,
                    "-" if p["threshold"] is None else f"{p['threshold']:.4f}",
                    fmt(p["precision"]),
                    fmt(p["recall"]),
                    p["flagged"],
                    p["reached"],
                ]
                for name, p in points.items()
            ],
        )
    if args.report:
        print(report["report"])
    return 0


def _write_report(
    args: argparse.Namespace, store: Any, samples: list[Any], evaluation: Any, detections: list[Any]
) -> Any:
    """The HTML report of an evaluation: its metrics as --json prints them (matplotlib is imported
    only when a report is asked for)."""
    from quickstudy.evaluate.report import (
        ReportData,
        prediction_row,
        taxonomy_history_rows,
        truth_row,
        write_report,
    )

    return write_report(
        args.report,
        ReportData(
            title=f"{args.model} on {args.store} ({args.split})",
            evaluation=evaluation,
            ground_truth=[truth_row(s) for s in samples],
            predictions=[prediction_row(d) for d in detections],
            taxonomy_history=taxonomy_history_rows(store),
        ),
    )


def check_learn(args: argparse.Namespace) -> None:
    if bool(args.images) == args.from_store:
        raise QuickstudyError("learn: give either --images IMG... or --from-store")
    if args.transductive < 0:
        raise QuickstudyError(f"learn: --transductive must be at least 0 steps, got {args.transductive}")


def _distinct_images(images: list[str]) -> list[str]:
    """``images`` without repeats (by resolved path: ``a.jpg`` and ``./a.jpg`` are one image), saying which."""
    first: dict[Path, str] = {}
    for image in images:
        key = Path(image).resolve()
        if key in first:
            print(f"note: {image} is {first[key]} again; it counts once", file=sys.stderr)
        else:
            first[key] = image
    return list(first.values())


def cmd_learn(args: argparse.Namespace) -> int:
    from quickstudy.detect.fewshot import learn_class

    store = _open_store(args.store)
    started = time.perf_counter()
    version = learn_class(
        args.model,
        store,
        args.class_name,
        images=_distinct_images(args.images) if args.images else None,
        adapt=args.adapt,
        localizer=args.adapt_localizer,
        recognizer=args.adapt_recognizer,
        transductive=args.transductive,
        device=args.device,
    )
    print(
        f"learned {args.class_name!r} in {time.perf_counter() - started:.2f} s: version {version} (current)"
    )
    _refresh_exports(args.model)
    return 0


def _refresh_exports(model: str) -> None:
    """A new current version reaches the model's ONNX exports without exporting again."""
    from quickstudy.deploy.export import refresh_exports

    for export in refresh_exports(model):
        print(f"rewrote the class memory of the export {export}")


def cmd_suggest(args: argparse.Namespace) -> int:
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.suggest import suggest_images

    store = _open_store(args.store)
    predictor = Predictor.from_dir(args.model, device=args.device)
    ranked, unlabelled = suggest_images(predictor, store, args.class_name, args.n)
    if args.json:
        print_json([s.to_dict() for s in ranked])
        return 0
    asked = f"holding {args.class_name}" if args.class_name else "holding a defect no known type explains"
    print_table(
        f"the {len(ranked)} of {unlabelled} unlabelled images most likely {asked}",
        ["image", "score", "why"],
        [[str(s.path), f"{s.score:.3f}", s.why] for s in ranked],
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from quickstudy.detect.versions import ModelFolder

    folder = ModelFolder(args.model)
    current = folder.current()
    versions = folder.versions()
    if args.json:
        print_json([v.listing(current) for v in versions])
        return 0
    rows = [
        [
            f"{'*' if v.number == current else ' '} v{v.number}",
            v.created,
            len(v.classes),
            _input_text(v.input),
            v.note,
        ]
        for v in versions
    ]
    print_table(f"{args.model} (* = current)", ["version", "created", "classes", "input", "note"], rows)
    return 0


def _input_text(geometry: dict[str, Any]) -> str:
    """``320 px grey, tiles`` — how a version's network sees images."""
    kind = "colour" if geometry.get("channels") == 3 else "grey"
    how = "tiles" if geometry.get("tiling") else "letterboxed"
    return f"{geometry.get('image_size')} px {kind}, {how}"


def cmd_models_use(args: argparse.Namespace) -> int:
    from quickstudy.detect.versions import ModelFolder

    ModelFolder(args.model).use(args.version)
    print(f"{args.model}: version {args.version} is current")
    _refresh_exports(args.model)
    return 0


def cmd_models_undo(args: argparse.Namespace) -> int:
    from quickstudy.detect.versions import ModelFolder

    print(f"{args.model}: version {ModelFolder(args.model).undo()} is current")
    _refresh_exports(args.model)
    return 0


def cmd_models_upgrade(args: argparse.Namespace) -> int:
    from quickstudy.detect.versions import ModelFolder
    from quickstudy.train.checkpoint import upgrade_checkpoint

    path = Path(args.model)
    files = [upgrade_checkpoint(path)] if path.is_file() else ModelFolder(path).upgrade()
    for file in files:
        print(f"re-saved {file} as plain data")
    return 0


def cmd_models_diff(args: argparse.Namespace) -> int:
    from quickstudy.detect.versions import ModelFolder, diff_versions

    report = diff_versions(ModelFolder(args.model), args.a, args.b)
    if args.json:
        print_json(report)
        return 0
    rows = [[c, "added"] for c in report["added"]] + [[c, "removed"] for c in report["removed"]]
    rows += [[c, f"prototype moved (cosine {cos:.3f})"] for c, cos in report["changed"].items()]
    rows += [[c, "found by the learned localization head"] for c in report["localized"]]
    rows += [[c, "found by the base localization head again"] for c in report["unlocalized"]]
    print_table(f"v{args.a} -> v{args.b}", ["class", "change"], rows)
    return 0


def add_training_options(parser: Any) -> None:
    """The options of `quickstudy train` that choose what and how it trains (all but --store, --out)."""
    parser.add_argument("--epochs", type=_positive, default=24)
    parser.add_argument("--limit", type=_positive, help="use only the first N training images (smoke runs)")
    parser.add_argument(
        "--classes", help="A,B,...: keep only images all of whose boxes are of these classes; train on them"
    )
    add_device(parser)
    add_amp(parser, default=True, why="; the detector's measured numbers were trained with it")
    parser.add_argument(
        "--weighting",
        help="multi-task loss weighting of localize vs recognize: equal, uncertainty, ... "
        "(default: equal; on P2 it beat uncertainty by 8 points mAP50)",
    )
    parser.add_argument("--batch-size", type=_positive, help="images per step (default: 8)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate, warm-up then cosine (default: 1e-3)")
    parser.add_argument(
        "--augment",
        choices=["flips", "dihedral"],
        help="geometric augmentation: flips keeps the image axes, for surfaces whose defects have a "
        "direction, such as rolled steel; dihedral also turns by 90 degrees (default: flips)",
    )
    parser.add_argument(
        "--photometric",
        action=argparse.BooleanOptionalAction,
        help="also vary brightness (±0.1) and contrast (x0.75-1.25) per image, for lines whose "
        "lighting drifts (default: off; on NEU-DET it cost 3-4 points mAP50)",
    )
    parser.add_argument(
        "--synthetic-defects",
        type=float,
        metavar="SHARE",
        help="paste a synthetic defect (an irregular patch of another image's texture, brighter or "
        "darker than the surface) on this share of the training images, as a box of no named type: "
        "the localizer learns departures from the surface, not only the known types (default: 0)",
    )
    parser.add_argument(
        "--squeeze",
        type=share,
        metavar="SHARE",
        help="squeeze this share of the training images along one axis (1-3x, the freed band filled "
        "with the image's mean), so the class-agnostic localizer also learns boxes thinner and longer "
        "than the known types' (default: 0)",
    )
    parser.add_argument(
        "--proposals-per-level",
        type=non_negative,
        metavar="N",
        help="each of the localizer's levels keeps its best N proposals ahead of the rest, so large "
        "boxes (a coarse level's few) are not crowded out by many small ones; 0: by score alone "
        "(default: 0)",
    )
    parser.add_argument(
        "--pseudo-labels",
        type=_pseudo_labels,
        metavar="P|off",
        help="a box without class also trains recognition with the class the model gives it at a "
        "probability of at least P; off: such boxes train localization only (default: 0.95; on "
        "NEU-DET with half the classes removed it gave +2.4 points mAP50). Say off when the store's "
        "unlabelled boxes may be of types the taxonomy does not have yet",
    )
    parser.add_argument(
        "--arch",
        choices=["tiny", "small", "resnet18"],
        default="small",
        help="network size: tiny (tests, demos), small (default), resnet18 (for --weights)",
    )
    parser.add_argument(
        "--fine-recognition",
        action="store_true",
        help="the recognition head also reads the network's stride-4 stage: for defects only a few "
        "pixels wide at the network's input, whose shape the stride-8 maps blur",
    )
    parser.add_argument(
        "--weights", help="torchvision resnet18 state dict file for the backbone (--arch resnet18)"
    )
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="start the backbone from this `quickstudy pretrain --backbone detector` run (same --arch)",
    )
    parser.add_argument(
        "--fit-all",
        action="store_true",
        help="train on every TRAIN image and calibrate the thresholds on those same images (optimistic "
        "thresholds; the detectors it is compared with fit the whole split: P2 and P4 were measured so)",
    )
    parser.add_argument(
        "--image-size",
        type=_image_size,
        default="auto",
        metavar="N|auto",
        help="the network input's long side in pixels; images keep their aspect (resized, then padded) "
        "and predictions come back in each image's own pixels (default auto: the training images' "
        "median long side within 96-640, NEU-DET 200)",
    )
    parser.add_argument(
        "--channels",
        choices=["auto", "1", "3"],
        default="auto",
        help="grey (1) or colour (3) input (default auto: colour when the training images' channels "
        "differ; grey pictures saved as RGB stay grey)",
    )
    parser.add_argument(
        "--tiling",
        choices=["auto", "on", "off"],
        default="auto",
        help="train on overlapping full-resolution tiles and predict tile by tile, for small defects in "
        "large frames (default auto: on when the median box, letterboxed with its frame to the input "
        "size, would be under 10 px, as measured on a synthetic line; stored in the model)",
    )
    parser.add_argument("--seed", type=int, default=0)


def _image_size(text: str) -> int | str:
    if text == "auto":
        return text
    size = _positive(text)
    if not 32 <= size <= 4096:
        raise argparse.ArgumentTypeError(f"{size}: give an input size between 32 and 4096 pixels, or auto")
    return size


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the defect detector on a label store's train split",
        description="Train the multi-task detector (class-agnostic localization + prototype recognition) "
        "on the store's train split; boxes without class or with a partial label are used too. "
        "The TRAIN images with n %% 5 == 1 (NEU; elsewhere every fifth) are held out to calibrate "
        "the thresholds unless --fit-all. Writes DIR/versions/v1.pt; rerunning resumes from "
        "DIR/checkpoint.pt.",
    )
    train.add_argument("--store", required=True, help="label store file (SQLite)")
    train.add_argument("--out", required=True, help="model folder to write")
    add_training_options(train)
    train.add_argument(
        "--workers",
        type=non_negative,
        default=0,
        metavar="N",
        help="DataLoader processes decoding the next batches while the network trains; the batches are "
        "the same with any number, and the decode cache is shared out among them (default: 0, decode "
        "in the training process: on a busy 2-core CPU 1 or 2 workers trained no faster, "
        "benchmarks/results/realimages.md)",
    )
    train.set_defaults(func=cmd_train, check=check_train)

    predict = subparsers.add_parser(
        "predict",
        help="find and name defects in images",
        description="Boxes, class names (or 'unknown') and scores for each image, at the per-class "
        "operating thresholds calibrated on held-out images unless --threshold is given.",
    )
    predict.add_argument(
        "--model",
        required=True,
        help="model folder (from `quickstudy train`) or export folder (`quickstudy export`)",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--threshold", type=float, help="one score threshold for every class")
    add_device(predict)
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(func=cmd_predict)

    evaluate = subparsers.add_parser(
        "eval",
        help="score a detector on a split of a label store",
        description="COCO mAP@[.5:.95], mAP50 and per-class AP50 (pycocotools), class-agnostic AR@100, "
        "image-level precision/recall per class at the calibrated thresholds, how each type's boxes are "
        "named (right, unknown, another type, missed; a type in the store the model lacks included, so "
        "the share of a new type reported unknown before `learn`, and of known boxes called unknown, "
        "are in the JSON's called_unknown), ms per image.",
    )
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--store", required=True)
    evaluate.add_argument("--split", default="test")
    add_device(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--report", metavar="OUT.html", help="also write a self-contained HTML report")
    evaluate.add_argument(
        "--target-precision",
        type=_fraction,
        metavar="P",
        help="also pick, per class and for 'defect present', the image-score threshold that reaches "
        "precision P on this split with the most recall, and print the recall it costs (e.g. 0.99)",
    )
    evaluate.set_defaults(func=cmd_eval)

    learn = subparsers.add_parser(
        "learn",
        help="add a defect type to a model from a few marked images",
        description="Compute the class's prototype from its marked boxes in the given store images (or in "
        "every TRAIN image with --from-store) and write a new model version; the old one stays "
        "(`quickstudy models undo`). No retraining: the backbone stays; a localizer for the learned types and "
        "the recognition head are tuned only where the new type needs it (see their options), and the note "
        "says so.",
    )
    learn.add_argument("--model", required=True)
    learn.add_argument("--store", required=True)
    learn.add_argument("--class", dest="class_name", required=True, help="the class to learn (in the store)")
    learn.add_argument("--images", nargs="+", metavar="IMG", help="store images holding marked boxes of it")
    learn.add_argument("--from-store", action="store_true", help="use every TRAIN image with a box of it")
    learn.add_argument("--adapt", action="store_true", help="tune the new prototype on its support boxes")
    learn.add_argument(
        "--adapt-localizer",
        action=argparse.BooleanOptionalAction,
        help="also teach a localization head of the learned types the support boxes (seconds to a minute "
        "on CPU); the type's detections then come from it, every trained type's from the base head, which "
        "does not change: for a type the model does not find at all (default: on by itself when the base "
        "head proposes fewer than half of the support boxes at IoU >= 0.5; the new version's note says so)",
    )
    add_adapt_recognizer(
        learn,
        "also tune the recognition head on the support boxes, with the boxes of up to 64 other TRAIN images "
        "of the known types replayed (a box of several types as one of them) and held to their embeddings, "
        "then make the prototype and the unknown cuts again: for a type that looks like a known one, whose "
        "few boxes the features place on top of it (seconds on CPU; known boxes' scores may change a "
        "little). auto: only where, tuned without one support image at a time, it names more of the "
        "held-out boxes right than the prototype does (with one support image, none to hold out: tuned), "
        "and names the known boxes of 64 more TRAIN images no worse; the note says which (default: auto; "
        "alone: on)",
    )
    learn.add_argument(
        "--transductive",
        type=int,
        default=0,
        metavar="STEPS",
        help="refine the new prototype STEPS times on confident proposals of up to 200 other TRAIN images "
        "of the store, used as images only: their labels are never read (default: 0, off)",
    )
    add_device(learn)
    learn.set_defaults(func=cmd_learn, check=check_learn)

    suggest = subparsers.add_parser(
        "suggest",
        help="the unlabelled images to look at next",
        description="Rank the store's unlabelled (not checked) images by how likely they hold a defect no "
        "known type explains (their most abnormal region far from every class prototype), or, with "
        "--class, a defect of the type being taught (its highest detection score), so the few images "
        "you mark are the right few.",
    )
    suggest.add_argument("--model", required=True, help="model folder")
    suggest.add_argument("--store", required=True, help="label store file (SQLite)")
    suggest.add_argument(
        "--class", dest="class_name", help="rank by this class's detections (a class the model knows)"
    )
    suggest.add_argument("-n", type=_positive, default=20, help="how many images to list (default: 20)")
    add_device(suggest)
    suggest.add_argument("--json", action="store_true", help="print JSON")
    suggest.set_defaults(func=cmd_suggest)

    models = subparsers.add_parser("models", help="list, compare and choose model versions")
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the versions of a model folder")
    listing.add_argument("--model", required=True)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_models_list)
    use = actions.add_parser("use", help="make a version current")
    use.add_argument("--model", required=True)
    use.add_argument("version", type=_positive)
    use.set_defaults(func=cmd_models_use)
    undo = actions.add_parser("undo", help="go back to the version before the current one")
    undo.add_argument("--model", required=True)
    undo.set_defaults(func=cmd_models_undo)
    upgrade = actions.add_parser(
        "upgrade",
        help="re-save a model written by an older quickstudy as plain data",
        description="Model files are read with torch.load(weights_only=True): tensors and plain data only, "
        "because unpickling anything else can run code. A file an older quickstudy wrote with NumPy "
        "numbers or paths is refused; this reads it with exactly those types admitted to the same "
        "restricted reader and re-saves it as plain data. Anything else is still refused.",
    )
    upgrade.add_argument("--model", required=True, help="a model folder, or one checkpoint file")
    upgrade.set_defaults(func=cmd_models_upgrade)
    diff = actions.add_parser("diff", help="classes added, removed or moved between two versions")
    diff.add_argument("--model", required=True)
    diff.add_argument("a", type=_positive)
    diff.add_argument("b", type=_positive)
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(func=cmd_models_diff)
