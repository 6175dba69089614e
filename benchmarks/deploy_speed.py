#!/usr/bin/env python3
"""CPU speed of the deployed detector (onnxruntime, :class:`quickstudy.deploy.runtime.OnnxPredictor`)
against the torch :class:`~quickstudy.detect.predictor.Predictor` on the same model and images (issue 21).

Each measurement runs in a fresh process with the thread count set before any work: start-up to the
first prediction (the interpreter, imports and model load included), latency at batch 1 (median over
images, pre- and post-processing included), throughput at batch 8, and peak resident memory.
On the first thread count, the same run times two outside baselines the same way: torchvision
RetinaNet-R50 (random init, 7 classes, 200 px) and Ultralytics YOLOv8n ``predict`` at imgsz 224 (random
init from ``yolov8n.yaml``, offline as ``p9_yolo_anchor.py`` sets it up; the row says why when
Ultralytics is not importable from --yolo-packages).

    .venv/bin/python benchmarks/deploy_speed.py --model runs/neu-small --work /tmp/deploy-speed
    .venv/bin/python benchmarks/deploy_speed.py --train-epochs 3 --work /tmp/deploy-speed   # no model yet
    .venv/bin/python benchmarks/deploy_speed.py --model runs/neu-small --work /tmp/deploy-speed --rounds 3

--rounds N runs every row N times in turn and reports each round's ratios and their median: on a
shared machine the load drifts between rows, less between neighbours in one round. --paired instead
loads torch, onnxruntime and YOLOv8n into one process and times them image by image in turn (batch 1,
the first thread count, 3 passes over the images): the per-image ratios see the same load.

    .venv/bin/python benchmarks/deploy_speed.py --model runs/neu-small --work /tmp/deploy-speed --threads 1 --paired

With no --model, a ``small`` detector is trained for --train-epochs on NEU-DET TRAIN (P1) images
n ≤ 50 (a speed model, not an accurate one). Images: NEU-DET TEST images (P1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"
YOLO_YAML = "yolov8n.yaml"
YOLO_IMGSZ = 224
BASELINES = ("retinanet", "yolov8n")  # timed on the first thread count only


def load_predictor(runtime: str, threads: int, target: str) -> Callable[[list[str]], Any]:
    """A ``predict(paths)`` for ``runtime``, reading, preprocessing and postprocessing included."""
    if runtime == "onnx":
        from quickstudy.deploy.runtime import OnnxPredictor

        return OnnxPredictor(target, threads=threads).predict
    if runtime == "yolov8n":
        sys.path.insert(0, str(ANCHORS))
        from neu_yolo import setup_offline_env  # type: ignore[import-not-found]

        setup_offline_env(target)  # before ultralytics is imported: it reads the environment then
    import torch

    torch.set_num_threads(threads)
    if runtime == "torch":
        from quickstudy.detect.predictor import Predictor

        return Predictor.from_dir(target).predict
    if runtime == "retinanet":
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.models.detection import retinanet_resnet50_fpn

        torch.manual_seed(0)
        retinanet = retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=7, min_size=200, max_size=200
        ).eval()

        def predict_retinanet(paths: list[str]) -> Any:
            images = [decode_image(path, mode=ImageReadMode.RGB).float() / 255 for path in paths]
            with torch.inference_mode():
                return retinanet(images)

        return predict_retinanet
    from ultralytics import YOLO

    yolo = YOLO(YOLO_YAML)  # built from the yaml: random init, timing only

    def predict_yolo(paths: list[str]) -> Any:
        return yolo.predict(paths, imgsz=YOLO_IMGSZ, batch=len(paths), device="cpu", verbose=False)

    return predict_yolo


def onnx_stages(predictor: Any, images: list[str]) -> dict[str, float]:
    """Median ms per image of each step of the onnxruntime predictor's ``predict([path])`` (letterboxing
    models): reading the file, its channels (colour read as grey), letterboxing, the dense graph, the
    embedding graph on the image's proposals, and the rest (top-k, NMS, abnormality, scoring, naming:
    the median whole predict less the others' medians)."""
    import numpy as np

    from quickstudy.data import geometry
    from quickstudy.data.images import as_channels, read_image

    steps: dict[str, list[float]] = {}
    for path in images:
        marks = [time.perf_counter()]
        pixels = read_image(path, colour=True)
        marks.append(time.perf_counter())
        pixels, _ = as_channels(pixels, predictor.channels, path)
        marks.append(time.perf_counter())
        planes, _ = geometry.letterbox(pixels, predictor.image_size)
        inputs = planes[None].astype(np.float32) / np.float32(255)
        marks.append(time.perf_counter())
        extra = dict(zip(predictor.dense_outputs, predictor.dense.run(None, {"images": inputs}), strict=True))
        marks.append(time.perf_counter())
        boxes = predictor._propose(extra["scores"][0], extra["boxes"][0], extra)["boxes"]
        feeds = {name: value for name, value in extra.items() if name.startswith("features")}
        marks.append(time.perf_counter())
        predictor.embed.run(None, {**feeds, "boxes": boxes, "prototypes": predictor.prototypes})
        marks.append(time.perf_counter())
        predictor.predict([path])
        marks.append(time.perf_counter())
        spans = dict(
            zip(
                ("read", "channels", "letterbox", "dense", "propose", "embed", "predict"),
                np.diff(marks),
                strict=True,
            )
        )
        for step in ("read", "channels", "letterbox", "dense", "embed", "predict"):
            steps.setdefault(step, []).append(1000 * spans[step])
        steps.setdefault("proposals", []).append(len(boxes))
    median = {step: float(np.median(values)) for step, values in steps.items()}
    median["rest"] = median["predict"] - sum(
        median[s] for s in ("read", "channels", "letterbox", "dense", "embed")
    )
    return {step: round(value, 2) for step, value in median.items()}


def paired(threads: int, targets: dict[str, str], images: list[str], passes: int = 3) -> dict[str, Any]:
    """Batch-1 latency of torch, onnxruntime and YOLOv8n taking turns image by image in one process, so
    that each image's three times see the same load: the medians, and the median per-image ratios."""
    predictors = {}
    for runtime in ("torch", "onnx", "yolov8n"):
        try:
            predictors[runtime] = load_predictor(runtime, threads, targets[runtime])
        except ImportError:  # Ultralytics lives outside the project's venv
            continue
    names = list(predictors)
    for predict in predictors.values():
        for path in images[:3]:  # warm-up
            predict([path])
    times: dict[str, list[float]] = {name: [] for name in names}
    for k, path in enumerate(images * passes):
        for name in names[k % len(names) :] + names[: k % len(names)]:  # each goes first in turn
            t = time.perf_counter()
            predictors[name]([path])
            times[name].append(1000 * (time.perf_counter() - t))
    result: dict[str, Any] = {
        "paired": names,
        "threads": threads,
        "calls": len(images) * passes,
        **{f"{name}_latency_ms_median": round(statistics.median(times[name]), 2) for name in names},
    }
    for other in ("torch", "yolov8n"):
        if other in times:
            ratios = [a / b for a, b in zip(times["onnx"], times[other], strict=True)]
            result[f"onnx_over_{other}_median_per_image"] = round(statistics.median(ratios), 3)
    return result


def worker(runtime: str, threads: int, target: str, images: list[str], started: float) -> dict[str, Any]:
    """One measurement in this fresh process; ``started``: when the parent launched it."""
    try:
        predict = load_predictor(runtime, threads, target)
    except ImportError as error:  # Ultralytics lives outside the project's venv
        return {"runtime": runtime, "threads": threads, "skipped": f"not importable: {error}"}
    predict(images[:1])
    startup = time.time() - started
    for path in images[:3]:  # warm-up
        predict([path])
    latencies = []
    for path in images:
        t = time.perf_counter()
        predict([path])
        latencies.append(time.perf_counter() - t)
    batches = [images[i : i + 8] for i in range(0, len(images) - 7, 8)]
    t = time.perf_counter()
    for batch in batches:
        predict(batch)
    throughput = 8 * len(batches) / (time.perf_counter() - t)
    latencies.sort()
    onnx_predictor = getattr(predict, "__self__", None)
    stages = (
        {"stages_ms": onnx_stages(onnx_predictor, images)}
        if runtime == "onnx" and not onnx_predictor.tiling
        else {}
    )
    return {
        "runtime": runtime,
        "threads": threads,
        "startup_s": round(startup, 3),
        "latency_ms_median": round(1000 * latencies[len(latencies) // 2], 2),
        "latency_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 2),
        "throughput_batch8_img_s": round(throughput, 1),
        "peak_rss_mb": peak_rss_mb(),
        "torch_imported": "torch" in sys.modules,
        **stages,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train_small(work: Path, epochs: int) -> Path:
    from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
    from quickstudy.detect.training import train_detector
    from quickstudy.labels.known import import_neu_det
    from quickstudy.labels.store import Store

    model = work / "model"
    if (model / "versions").is_dir():
        return model
    with Store.open(work / "labels.db") as store:
        import_neu_det(store, data_root() / "neu-det")
        splits: dict[int, str | None] = {}
        for image in store.images():
            n = int(image.path.stem.rsplit("_", 1)[1])
            splits[image.image_id] = "train" if n % 5 and n <= 50 else None
        store.set_splits(splits)
        train_detector(store, model, epochs=epochs, config=DetectorConfig(**ARCHITECTURES["small"]))
    return model


def data_root() -> Path:
    return Path(os.environ.get("QUICKSTUDY_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a trained model folder (default: train a small one in --work)")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/deploy-speed")
    parser.add_argument("--images", type=int, default=48, help="NEU-DET TEST images timed")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every row this many times, in turn (a shared machine's load drifts)",
    )
    parser.add_argument("--json-out")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="instead: torch, onnxruntime and YOLOv8n in one process, image by image in turn (first thread count)",
    )
    parser.add_argument(
        "--yolo-packages", default="/work/yolo-pkgs", help="where Ultralytics is installed (PYTHONPATH)"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("RUNTIME", "THREADS", "MODEL", "STARTED"), help=argparse.SUPPRESS
    )
    parser.add_argument("image_list", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runtime, threads, model, started = args.worker
        if runtime == "paired":
            paths = dict(zip(("torch", "onnx", "yolov8n"), model.split(os.pathsep), strict=True))
            print(json.dumps(paired(int(threads), paths, args.image_list)))
            return
        print(json.dumps(worker(runtime, int(threads), model, args.image_list, float(started))))
        return

    from quickstudy.deploy.export import export_onnx

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else train_small(work, args.train_epochs)
    export = export_onnx(model, work / "export")
    test = sorted(
        (
            p
            for p in (data_root() / "neu-det" / "IMAGES").glob("*.jpg")
            if int(p.stem.rsplit("_", 1)[1]) % 5 == 0
        ),
        key=lambda p: (int(p.stem.rsplit("_", 1)[1]), p.stem),
    )[: args.images]
    thread_counts = [int(t) for t in args.threads.split(",")]
    # YOLOv8n right after onnxruntime: on a shared machine, neighbours in time see similar load
    runs = [
        (runtime, threads)
        for threads in thread_counts
        for runtime in ("torch", "onnx", *(BASELINES if threads == thread_counts[0] else ()))
    ]
    targets = {"torch": model, "onnx": export, "retinanet": model, "yolov8n": work / "yolo"}
    load_before = os.getloadavg()
    if args.paired:
        threads = thread_counts[0]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, [args.yolo_packages, os.environ.get("PYTHONPATH")])),
        }
        paths = os.pathsep.join(str(targets[runtime]) for runtime in ("torch", "onnx", "yolov8n"))
        command = [sys.executable, __file__, "--worker", "paired", str(threads), paths, "0", *map(str, test)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        report = {
            "model": str(model),
            "images": len(test),
            "load_average_before": load_before,
            "load_average": os.getloadavg(),
            **json.loads(result.stdout.strip().splitlines()[-1]),
        }
        print(json.dumps(report, indent=2))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=2))
        return
    rows = []
    for round_ in range(args.rounds):
        for runtime, threads in runs:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            if runtime == "yolov8n":
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.yolo_packages, env.get("PYTHONPATH")]))
            command = [
                sys.executable,
                __file__,
                "--worker",
                runtime,
                str(threads),
                str(targets[runtime]),
                str(time.time()),
            ]
            load = os.getloadavg()[0]
            result = subprocess.run(
                [*command, *map(str, test)], capture_output=True, text=True, env=env, check=True
            )
            row = {"round": round_, "load_1min": load, **json.loads(result.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row))
    report: dict[str, Any] = {
        "model": str(model),
        "export": str(export),
        "images": len(test),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    # each round's ratio (its rows ran minutes apart at most), and their median over rounds
    for numerator, denominator in (("onnx", "torch"), ("onnx", "yolov8n"), ("torch", "retinanet")):
        for threads in thread_counts:
            ratios = []
            for round_ in range(args.rounds):
                pair = {
                    row["runtime"]: row
                    for row in rows
                    if row["round"] == round_
                    and row["threads"] == threads
                    and row["runtime"] in (numerator, denominator)
                }
                if len(pair) == 2 and all("skipped" not in row for row in pair.values()):
                    ratios.append(
                        pair[numerator]["latency_ms_median"] / pair[denominator]["latency_ms_median"]
                    )
            if ratios:
                key = f"latency_b1_ratio_{numerator}_over_{denominator}_{threads}_threads"
                report[key] = round(statistics.median(ratios), 2)
                report[f"{key}_by_round"] = [round(r, 2) for r in ratios]
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
