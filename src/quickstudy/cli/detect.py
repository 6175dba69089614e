"""``quickstudy train | predict | eval | learn | models``: the defect detector."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quickstudy.cli._common import print_json, print_table
from quickstudy.errors import QuickstudyError


def _open_store(path: str) -> Any:
    from quickstudy.labels.store import Store

    if not Path(path).is_file():
        raise QuickstudyError(f"{path}: no such label store (create one with `quickstudy labels import`)")
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


def cmd_train(args: argparse.Namespace) -> int:
    from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
    from quickstudy.detect.training import train_detector

    store = _open_store(args.store)
    config = DetectorConfig(**ARCHITECTURES[args.arch])
    version = train_detector(
        store,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        classes=_classes(args.classes),
        limit=args.limit,
        device=args.device,
        weighting=args.weighting,
        config=config,
        weights=args.weights,
        seed=args.seed,
    )
    print(f"wrote {Path(args.out) / 'versions' / f'v{version}.pt'} (current)")
    return 0


def _detections_json(path: str, detections: list) -> dict[str, Any]:
    return {"image": path, "detections": [d.to_dict() for d in detections]}


def cmd_predict(args: argparse.Namespace) -> int:
    from quickstudy.detect.predictor import Predictor, image_paths

    paths = image_paths(args.images)
    predictor = Predictor.from_dir(args.model, device=args.device)
    results = predictor.predict(paths, score_threshold=args.threshold)
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
    from quickstudy.detect.evaluation import evaluate_detector
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.versions import ModelFolder, check_taxonomy

    store = _open_store(args.store)
    check_taxonomy(ModelFolder(args.model).load(), store, args.model)
    samples = store.samples(args.split)
    if not samples:
        raise QuickstudyError(f"{args.store}: no images in split {args.split!r}")
    report = evaluate_detector(Predictor.from_dir(args.model, device=args.device), samples)
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
        f"AR100 (agnostic) {report['AR100_agnostic']:.3f}  {report['ms_per_image']:.1f} ms/image",
        ["class", "AP50", "image precision", "image recall"],
        rows,
    )
    return 0


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the defect detector on a label store's train split",
        description="Train the multi-task detector (class-agnostic localization + prototype recognition) "
        "on the store's train split; boxes without class or with a partial label are used too. "
        "Writes DIR/versions/v1.pt; rerunning resumes from DIR/checkpoint.pt.",
    )
    train.add_argument("--store", required=True, help="label store file (SQLite)")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--epochs", type=_positive, default=24)
    train.add_argument("--limit", type=_positive, help="use only the first N training images (smoke runs)")
    train.add_argument(
        "--classes", help="A,B,...: keep only images all of whose boxes are of these classes; train on them"
    )
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    train.add_argument(
        "--weighting", default="uncertainty", help="multi-task loss weighting (equal, uncertainty, ...)"
    )
    train.add_argument("--batch-size", type=_positive, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument(
        "--arch",
        choices=["tiny", "small", "resnet18"],
        default="small",
        help="network size: tiny (tests, demos), small (default), resnet18 (for --weights)",
    )
    train.add_argument(
        "--weights", help="torchvision resnet18 state dict file for the backbone (--arch resnet18)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_train)

    predict = subparsers.add_parser(
        "predict",
        help="find and name defects in images",
        description="Boxes, class names (or 'unknown') and scores for each image, at the per-class "
        "operating thresholds calibrated on held-out images unless --threshold is given.",
    )
    predict.add_argument("--model", required=True, help="model folder (from `quickstudy train`)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--threshold", type=float, help="one score threshold for every class")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(func=cmd_predict)

    evaluate = subparsers.add_parser(
        "eval",
        help="score a detector on a split of a label store",
        description="COCO mAP@[.5:.95], mAP50 and per-class AP50 (pycocotools), class-agnostic AR@100, "
        "image-level precision/recall per class at the calibrated thresholds, ms per image.",
    )
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--store", required=True)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(func=cmd_eval)
