"""``quickstudy pretrain``: self-supervised pretraining of a backbone on a store's images, labels ignored."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quickstudy.backbones import BACKBONES
from quickstudy.cli._common import add_amp, add_device, print_json
from quickstudy.data.classification import store_classes
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store
from quickstudy.pretrain import METHODS, pretrain

# The detector's network sizes (quickstudy.detect.model.ARCHITECTURES, imported only when used).
DETECTOR_ARCHITECTURES = ["tiny", "small", "resnet18"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="self-supervised pretraining of a backbone on unlabelled images",
        description="Pretrain a backbone without labels (SimCLR: contrastive; BYOL: self-distillation "
        "with an EMA target) on every image of a label store (or of one split); boxes and classes "
        "are ignored. Images are decoded once into memory. The run folder's checkpoint.pt is what "
        "`--init DIR` of the few-shot learners (conv4, resnet12) and of `quickstudy train` "
        "(--backbone detector, same --arch) loads. Rerunning into the same folder resumes.",
    )
    parser.add_argument("--store", required=True, help="label store file whose images to learn from")
    parser.add_argument("--split", help="only images tagged with this split (e.g. train); default: all")
    parser.add_argument("--backbone", default="conv4", choices=sorted(BACKBONES))
    parser.add_argument("--width", type=int, help="conv4: filters per block (default 64)")
    parser.add_argument(
        "--arch",
        choices=DETECTOR_ARCHITECTURES,
        help="detector: the network size of `quickstudy train --arch` to pretrain (default small)",
    )
    parser.add_argument("--method", default="simclr", choices=sorted(METHODS))
    parser.add_argument(
        "--size",
        type=int,
        help="image side in pixels the backbone sees (default 64; detector: its image size, 200)",
    )
    parser.add_argument(
        "--stored-size",
        type=int,
        help="side images are kept at in memory; crops are cut from it "
        "(default: twice --size; detector: --size, as the detector stores them)",
    )
    parser.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step, two views each")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    add_device(parser)
    add_amp(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.csv)")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.set_defaults(func=_pretrain, check=check_pretrain)


def _network(args: argparse.Namespace) -> tuple[dict[str, Any], str | None, int, int]:
    """The backbone's constructor arguments, the detector arch they come from (else None), the
    side in pixels the backbone sees and the side images are stored at in memory."""
    if args.backbone != "detector":
        if args.arch:
            raise QuickstudyError(f"--arch is for --backbone detector, not {args.backbone}")
        size = 64 if args.size is None else args.size
        return ({"width": args.width} if args.width else {}), None, size, args.stored_size or 2 * size
    if args.width:
        raise QuickstudyError("--width is for conv4; the detector's network size is --arch")
    from quickstudy.detect.model import ARCHITECTURES, DetectorConfig

    arch = args.arch or "small"
    config = DetectorConfig(**ARCHITECTURES[arch])
    size = config.image_size if args.size is None else args.size
    kwargs = {"widths": config.widths, "depths": config.depths, "fpn_channels": config.fpn_channels}
    return kwargs, arch, size, args.stored_size or size


def check_pretrain(args: argparse.Namespace) -> None:
    _, _, size, stored_size = _network(args)
    counts = {"size": size, "stored-size": stored_size, "steps": args.steps, "batch-size": args.batch_size}
    for name, value in counts.items():
        if value < 1:
            raise QuickstudyError(f"--{name} must be positive, got {value}")


def _pretrain(args: argparse.Namespace) -> int:
    backbone_kwargs, arch, size, stored_size = _network(args)
    store_path = Path(args.store)
    with Store.open(store_path, create=False) as store:
        count = len(store.images(args.split))
        if count < 2:
            where = f"split {args.split!r} of " if args.split else ""
            raise QuickstudyError(
                f"{store_path}: {where}the store holds {count} images; pretraining needs 2 or more"
            )
        # Labels are ignored: every image counts as one class of "unlabelled" images.
        images = store_classes(
            store, split=args.split, size=stored_size, class_of=lambda _: "unlabelled"
        ).images
    metrics = pretrain(
        images,
        out_dir=args.out,
        backbone=args.backbone,
        backbone_kwargs=backbone_kwargs,
        arch=arch,
        method=args.method,
        image_size=size,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        amp=args.amp,
        seed=args.seed,
    )
    summary = {"out": args.out, "images": len(images), **metrics}
    if args.json:
        print_json(summary)
    else:
        network = f"{args.backbone} ({arch})" if arch else args.backbone
        print(
            f"pretrained {network} with {args.method} on {len(images)} images in {metrics['seconds']:.0f} s"
        )
        print(f"checkpoint: {Path(args.out) / 'checkpoint.pt'}  (use it with --init {args.out})")
    return 0
