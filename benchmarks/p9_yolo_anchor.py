#!/usr/bin/env python3
"""P9 anchor: Ultralytics YOLOv8n trained from scratch on magnetic tile, for a P9 benchmark to run in the
same run as quickstudy's detector (same split, input size and epochs; DESIGN.md protocol P9).

The split and boxes are quickstudy's own (``read_magnetic_tile``): classes Blowhole, Break, Crack, Fray,
Uneven; ``MT_Free`` images (and the few defect images whose masks hold no component of 2 x 2 px) train as
background images with empty label files. Labels are normalised by each image's own width and height;
Ultralytics letterboxes the non-square frames. Every TEST image is predicted (conf 0.001, max 100 boxes)
and boxes come back in the original image's pixels. Offline and random-init exactly as the NEU anchor
(``../shared/anchors/neu_yolo.py``, whose offline setup this reuses).

Ultralytics is not a project dependency and no test imports it. Set it up once beside the project's venv,
without a second torch:
    .venv/bin/pip install --target /work/yolo-pkgs --no-deps ultralytics==8.4.190 \\
        opencv-python-headless==5.1.0.95 polars==2.1.0 polars-runtime-32==2.1.0 psutil==7.2.2 \\
        ultralytics-thop==2.2.3 nvidia-ml-py==13.615.71 requests==2.34.2 urllib3==2.8.0 idna==3.21 \\
        charset-normalizer==3.5.3 certifi==2026.10.19.post1

Run (CPU, one thread; writes OUT/yolo_p9.json):
    PYTHONPATH=/work/yolo-pkgs OMP_NUM_THREADS=1 .venv/bin/python benchmarks/p9_yolo_anchor.py \\
        --epochs 1 --imgsz 320 --threads 1 --out OUT [--limit 40]
A P9 benchmark run with the same PYTHONPATH calls ``train_and_predict`` before it imports ultralytics
itself (the offline environment must be set first).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

from quickstudy.labels.formats.masks import read_magnetic_tile
from quickstudy.labels.records import ImportedImage

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"
DATA = ROOT.parent / "shared" / "data"
CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
FREE = "Free"  # the defect-free type: background images, not a class
MODEL_YAML = "yolov8n.yaml"
NMS = {"conf": 0.001, "iou": 0.6, "max_det": 100}  # iou as the NEU anchor's


def tile_type(image: ImportedImage) -> str:
    """The image's type, from its ``MT_<Type>/Imgs`` folder (also for defect images left without boxes)."""
    return image.path.parent.parent.name.removeprefix("MT_")


def round_robin(images: list[ImportedImage], limit: int) -> list[ImportedImage]:
    """The first ``limit`` images taken in turn from each type, so that a small subset holds every type."""
    by_type: dict[str, list[ImportedImage]] = defaultdict(list)
    for image in images:
        by_type[tile_type(image)].append(image)
    turns = chain.from_iterable(zip_longest(*by_type.values()))
    return [image for image in turns if image is not None][:limit]


def p9_images(
    root: Path, classes: Sequence[str], limit: int = 0
) -> tuple[list[ImportedImage], list[ImportedImage]]:
    """(TRAIN, TEST): TRAIN holds the images of ``classes`` and of ``Free``; TEST holds every TEST image."""
    images = read_magnetic_tile(root)
    train = [i for i in images if i.split == "train" and tile_type(i) in {*classes, FREE}]
    test = [i for i in images if i.split == "test"]
    if limit:
        train, test = round_robin(train, limit), round_robin(test, limit)
    return train, test


def yolo_label_lines(image: ImportedImage, classes: Sequence[str]) -> list[str]:
    """``class cx cy w h`` per box of ``classes``, normalised by this image's own width and height.

    Boxes of other types occur only on TEST images (training filters by type), which only Ultralytics' own
    end-of-training validation reads."""
    lines = []
    for box in image.boxes:
        if box.label not in classes:
            continue
        x1, y1, x2, y2 = box.xyxy
        cx, cy = (x1 + x2) / 2 / image.width, (y1 + y2) / 2 / image.height
        w, h = (x2 - x1) / image.width, (y2 - y1) / image.height
        lines.append(f"{classes.index(str(box.label))} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_dataset(
    train: list[ImportedImage], test: list[ImportedImage], folder: Path, classes: Sequence[str]
) -> Path:
    """A fresh Ultralytics dataset in ``folder`` (images symlinked, one label file per image, an empty one
    for a background image); returns its data.yaml."""
    shutil.rmtree(folder, ignore_errors=True)  # a previous run's images must not leak into this one
    for split, images in (("train", train), ("test", test)):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for image in images:
            name = f"{tile_type(image)}_{image.path.stem}"
            (folder / "images" / split / f"{name}{image.path.suffix}").symlink_to(image.path.absolute())
            text = "".join(f"{line}\n" for line in yolo_label_lines(image, classes))
            (folder / "labels" / split / f"{name}.txt").write_text(text)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(classes))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(
        f"path: {folder.absolute()}\ntrain: images/train\nval: images/test\ntest: images/test\nnames:\n{names}"
    )
    return data_yaml


def train_and_predict(
    root: Path,
    out_dir: Path,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    workers: int = 2,
    seed: int = 0,
    threads: int | None = None,
    classes: Sequence[str] | None = None,
    limit: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Train YOLOv8n from scratch on P9 TRAIN (``classes`` only, default all five), predict every TEST
    image; detections are keyed by ``str(image.path)`` as ``read_magnetic_tile(root)`` gives it.

    ``threads`` pins torch's CPU threads (Ultralytics would reset them); ``workers`` matters on CUDA only
    (Ultralytics loads data in the main process on CPU); ``device`` defaults to CUDA when there is one.
    """
    classes = list(classes or CLASSES)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ANCHORS))
    from neu_yolo import setup_offline_env  # type: ignore[import-not-found]

    setup_offline_env(str(out_dir))  # before ultralytics is imported: it reads the environment then

    import torch
    import ultralytics
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    device = device or ("0" if torch.cuda.is_available() else "cpu")
    on_cuda = device != "cpu"
    if on_cuda:
        import ultralytics.engine.trainer as trainer_module

        trainer_module.check_amp = lambda *args, **kwargs: True  # its self-check downloads yolo26n.pt

    def pin_threads(_: object) -> None:
        if threads is not None:
            torch.set_num_threads(threads)

    pin_threads(None)
    train, test = p9_images(Path(root), classes, limit)
    data_yaml = write_yolo_dataset(train, test, out_dir / "yolo_data", classes)
    print(
        f"P9 YOLO anchor: train {len(train)} images, test {len(test)} images, classes {classes}", flush=True
    )

    model = YOLO(MODEL_YAML)  # built from the yaml: random init
    epoch_starts: list[float] = []
    epoch_seconds: list[float] = []
    model.add_callback("on_pretrain_routine_start", pin_threads)  # after Ultralytics' select_device
    model.add_callback("on_train_epoch_start", lambda _: epoch_starts.append(time.perf_counter()))
    model.add_callback(
        "on_train_epoch_end", lambda _: epoch_seconds.append(time.perf_counter() - epoch_starts[-1])
    )
    start = time.perf_counter()
    model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        device=device,
        pretrained=False,
        amp=on_cuda,
        plots=False,
        val=False,
        seed=seed,
        deterministic=False,
        project=str(out_dir),
        name="train",
        exist_ok=True,
    )
    train_wall_seconds = time.perf_counter() - start

    trained = YOLO(str(out_dir / "train" / "weights" / "last.pt"))
    trained.add_callback("on_predict_start", pin_threads)
    key_of = {str(image.path.absolute()): str(image.path) for image in test}
    detections: dict[str, list[dict[str, Any]]] = {str(image.path): [] for image in test}
    paths = [str(image.path.absolute()) for image in test]
    predict_args = {"imgsz": imgsz, "device": device, "verbose": False, "batch": 1, **NMS}
    trained.predict(paths[0], **predict_args)  # model fusing and first-call setup stay out of the timing
    start = time.perf_counter()
    for result in trained.predict(paths, stream=True, **predict_args):
        boxes = result.boxes
        detections[key_of[result.path]] = [
            {"box": [round(v, 2) for v in xyxy], "class": classes[int(c)], "score": float(s)}
            for xyxy, c, s in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
        ]
    infer_seconds = time.perf_counter() - start
    megapixels = sum(image.width * image.height for image in test) / 1e6
    return {
        "detections": detections,
        "train_seconds": sum(epoch_seconds),
        "train_wall_seconds": train_wall_seconds,
        "epoch_seconds": epoch_seconds,
        "ms_per_image": 1000 * infer_seconds / len(test),
        "ms_per_megapixel": 1000 * infer_seconds / megapixels,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "seed": seed,
        "classes": classes,
        "n_train_images": len(train),
        "n_test_images": len(test),
        "nms": NMS,
        "device": torch.cuda.get_device_name(0) if on_cuda else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "tool": f"ultralytics {ultralytics.__version__} {MODEL_YAML} from scratch, torch {torch.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=DATA, help="folder holding magnetic-tile/")
    parser.add_argument("--out", type=Path, required=True, help="output folder (yolo_p9.json, dataset, run)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--imgsz", type=int, required=True, help="input size (long side, letterboxed)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: Ultralytics')")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), help="train on these types only")
    parser.add_argument("--limit", type=int, default=0, help="smoke run: at most N train and N test images")
    parser.add_argument("--device", default=None, help="'cpu', '0', ... (default: CUDA if there is one)")
    args = parser.parse_args()
    result = train_and_predict(
        args.data_root / "magnetic-tile",
        args.out,
        args.epochs,
        args.imgsz,
        batch=args.batch,
        workers=args.workers,
        seed=args.seed,
        threads=args.threads,
        classes=args.classes,
        limit=args.limit,
        device=args.device,
    )
    path = args.out / "yolo_p9.json"
    path.write_text(json.dumps(result, indent=1))
    epochs = ", ".join(f"{s:.0f}" for s in result["epoch_seconds"])
    print(
        f"epochs took {epochs} s (wall {result['train_wall_seconds']:.0f} s); inference "
        f"{result['ms_per_image']:.1f} ms/image, {result['ms_per_megapixel']:.1f} ms/MP; wrote {path}"
    )


if __name__ == "__main__":
    main()
