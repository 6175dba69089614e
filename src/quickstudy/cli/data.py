"""``quickstudy data``: import, inspect, split, mark checked and export labelled images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from quickstudy.cli._common import add_data_root, print_json, print_table
from quickstudy.data.paths import data_root
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store
from quickstudy.labels.formats import (
    export_coco,
    export_voc,
    export_yolo,
    import_coco,
    import_folder,
    import_magnetic_tile,
    import_mvtec,
    import_unlabelled,
    import_voc,
    import_yolo,
)
from quickstudy.labels.known import import_neu_det, neu_split


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="import, inspect, split and export labelled images")
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    imp = commands.add_parser(
        "import",
        help="import a dataset into a label store (one transaction: all or nothing)",
        description="Import images and boxes into a label store (created if missing). Formats: voc "
        "(Pascal VOC XML folder), coco (a JSON file), yolo (folder with data.yaml), folder "
        "(root/<class>/*.png, one whole-image box per image), images (a bare folder of images, imported "
        "as not yet labelled), mvtec (an MVTec AD category folder: train/good, test/<type>, "
        "ground_truth/<type>/<stem>_mask.png; one box per 8-connected mask component), neu-det (NEU-DET "
        "by name from the data root, tagged with the P1 split), magnetic-tile (by name from the data "
        "root, boxes from its masks, tagged with the P9 split). Images listed by an annotation file or "
        "in a `good` folder are marked checked (with no box: defect-free); bare images are not.",
    )
    imp.add_argument(
        "src", nargs="?", help="dataset path (omit for neu-det and magnetic-tile to use the data root)"
    )
    imp.add_argument(
        "--format",
        required=True,
        choices=["voc", "coco", "yolo", "folder", "images", "mvtec", "neu-det", "magnetic-tile"],
    )
    imp.add_argument("--store", required=True, help="label store file (SQLite)")
    imp.add_argument("--images", help="coco: folder the file_name entries are relative to")
    imp.add_argument("--add-classes", action="store_true", help="add class names the taxonomy lacks")
    imp.add_argument("--skip-invalid", action="store_true", help="leave out bad images and report them")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    add_data_root(imp)
    imp.set_defaults(func=_import)

    stats = commands.add_parser("stats", help="images, boxes, boxes without class, per class and split")
    stats.add_argument("--store", required=True)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_stats)

    export = commands.add_parser("export", help="write the store as COCO, VOC or YOLO")
    export.add_argument("out", help="output folder (or .json file for coco)")
    export.add_argument("--format", required=True, choices=["coco", "voc", "yolo"])
    export.add_argument("--store", required=True)
    export.add_argument(
        "--skip-unlabelled", action="store_true", help="yolo: leave out boxes without a single class"
    )
    export.set_defaults(func=_export)

    split = commands.add_parser("split", help="tag images train/val/test")
    split.add_argument("--store", required=True)
    how = split.add_mutually_exclusive_group(required=True)
    how.add_argument("--protocol", choices=["neu-p1"], help="a fixed protocol split (DESIGN.md P1)")
    how.add_argument("--fraction", type=float, help="test fraction, stratified by class")
    split.add_argument("--val-fraction", type=float, default=0.0, help="with --fraction: also tag val")
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(func=_split)

    check = commands.add_parser(
        "check",
        help="mark images checked: their boxes are complete (with none: a defect-free part)",
        description="Mark images checked: a person looked and their boxes are complete, so an image "
        "without boxes is a defect-free part (a negative for training), unlike an image nobody has "
        "looked at. Journaled and undoable (`quickstudy taxonomy undo`); the server's page does the same.",
    )
    check.add_argument("images", nargs="+", metavar="IMAGE", help="an image's path, or its id in the store")
    check.add_argument("--store", required=True)
    check.add_argument("--unlabelled", action="store_true", help="mark them back to not yet labelled")
    check.add_argument("--author", help="who marks them (default: $QUICKSTUDY_AUTHOR or user)")
    check.set_defaults(func=_check)


def _open(path: str, create: bool = False) -> Store:
    return Store.open(Path(path), create=create)


def _import(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    options = {"add_classes": True if args.add_classes else None, "skip_invalid": args.skip_invalid}
    with _open(args.store, create=True) as store, Console(stderr=True).status("importing"):
        if args.format == "neu-det":
            src = Path(args.src) if args.src else data_root(args.data_root) / "neu-det"
            report = import_neu_det(store, src, **options)
        elif args.format == "magnetic-tile":
            src = Path(args.src) if args.src else data_root(args.data_root) / "magnetic-tile"
            report = import_magnetic_tile(store, src, **options)
        elif args.src is None:
            raise QuickstudyError(f"--format {args.format} needs a dataset path")
        elif args.format == "voc":
            report = import_voc(store, args.src, **options)
        elif args.format == "coco":
            report = import_coco(store, args.src, image_dir=args.images, **options)
        elif args.format == "yolo":
            report = import_yolo(store, args.src, **options)
        elif args.format == "images":
            report = import_unlabelled(store, args.src, **options)
        elif args.format == "mvtec":
            report = import_mvtec(store, args.src, **options)
        else:
            report = import_folder(store, args.src, **options)
    result = {
        "store": args.store,
        "images": report.images,
        "boxes": report.boxes,
        "boxes_without_class": report.unlabelled_boxes,
        "boxes_from_polygons": report.boxes_from_polygons,
        "classes_added": report.classes_added,
        "skipped": report.skipped,
        "same_content": report.same_content,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        print_json(result)
    else:
        print(
            f"imported {report.images} images, {report.boxes} boxes "
            f"({report.unlabelled_boxes} without class) into {args.store} in {result['seconds']} s"
        )
        if report.boxes_from_polygons:
            print(
                f"{report.boxes_from_polygons} box(es) are the bounding boxes of polygons (segmentation labels)"
            )
        if report.classes_added:
            print(f"classes added: {', '.join(report.classes_added)}")
        for line in report.same_content:
            print(f"note: byte-identical images: {line}")
        for line in report.skipped:
            print(f"skipped: {line}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        stats = store.stats()
    if args.json:
        print_json(stats)
        return 0
    print_table(
        f"{stats['store']} (taxonomy version {stats['taxonomy_version']})",
        ["what", "count"],
        [
            ["images", stats["images"]],
            ["  checked (boxes complete)", stats["checked_images"]],
            ["    of them defect-free", stats["defect_free_images"]],
            ["  not yet labelled", stats["unlabelled_images"]],
            ["boxes", stats["boxes"]],
            ["boxes without class", stats["boxes_without_class"]],
            ["boxes of retired classes", stats["boxes_of_retired_classes"]],
        ],
    )
    print_table("boxes per class", ["class", "boxes"], [[k, v] for k, v in stats["per_class"].items()])
    if stats["partial_label_sets"]:
        print_table(
            "partial labels (old labels of split classes)",
            ["may be one of", "boxes"],
            [[k, v] for k, v in stats["partial_label_sets"].items()],
        )
    print_table(
        "splits",
        ["split", "images", "boxes"],
        [[k, v["images"], v["boxes"]] for k, v in stats["splits"].items()],
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        if args.format == "coco":
            print(f"wrote {export_coco(store, args.out)}")
        elif args.format == "voc":
            print(f"wrote {export_voc(store, args.out)} annotation files under {args.out}/Annotations")
        else:
            result = export_yolo(store, args.out, skip_unlabelled=args.skip_unlabelled)
            print(f"wrote {result['boxes']} boxes to {args.out}")
            if result["skipped_without_single_class"]:
                print(f"left out {result['skipped_without_single_class']} boxes without a single class")
    return 0


def _split(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        if args.protocol == "neu-p1":
            store.set_splits(
                {image.image_id: neu_split(image.path) for image in store.images()}, reason="neu-p1"
            )
        else:
            store.split_by_fraction(args.fraction, args.val_fraction, args.seed)
        splits = store.stats()["splits"]
    print(", ".join(f"{name}: {v['images']} images" for name, v in splits.items()))
    return 0


def _image_ids(store: Store, names: list[str]) -> list[int]:
    """The ids of images named by their path (as given or resolved) or their id, in the order given."""
    by_path = {str(image.path): image.image_id for image in store.images()}
    ids = set(by_path.values())
    found = []
    for name in names:
        image_id = by_path.get(str(Path(name).resolve()))
        if image_id is None and name.isdigit() and int(name) in ids:
            image_id = int(name)
        if image_id is None:
            raise QuickstudyError(f"{store.path}: no image {name!r} in the store (give its path or id)")
        found.append(image_id)
    return list(dict.fromkeys(found))


def _check(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        image_ids = _image_ids(store, args.images)
        store.set_checked(image_ids, not args.unlabelled, author=args.author)
    what = "not yet labelled" if args.unlabelled else "checked"
    print(f"{len(image_ids)} image{'' if len(image_ids) == 1 else 's'} marked {what} in {args.store}")
    return 0
