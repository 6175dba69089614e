#!/usr/bin/env python3
"""CPU speed of the deployed detector (onnxruntime, :class:`quickstudy.deploy.runtime.OnnxPredictor`)
against the torch :class:`~quickstudy.detect.predictor.Predictor` on the same model and images (issue 21).

Each measurement runs in a fresh process with the thread count set before any work: start-up to the
first prediction (the interpreter, imports and model load included), latency at batch 1 (median over
images, pre- and post-processing included), throughput at batch 8, and peak resident memory.

    .venv/bin/python benchmarks/deploy_speed.py --model runs/neu-small --work /tmp/deploy-speed
    .venv/bin/python benchmarks/deploy_speed.py --train-epochs 3 --work /tmp/deploy-speed   # no model yet

With no --model, a ``small`` detector is trained for --train-epochs on NEU-DET TRAIN (P1) images
n ≤ 50 (a speed model, not an accurate one). Images: NEU-DET TEST images (P1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def worker(runtime: str, threads: int, model: str, images: list[str], started: float) -> dict[str, Any]:
    """One measurement in this fresh process; ``started``: when the parent launched it."""
    if runtime == "onnx":
        from quickstudy.deploy.runtime import OnnxPredictor

        predictor: Any = OnnxPredictor(model, threads=threads)
    else:
        import torch

        torch.set_num_threads(threads)
        from quickstudy.detect.predictor import Predictor

        predictor = Predictor.from_dir(model)
    predictor.predict(images[:1])
    startup = time.time() - started
    for path in images[:3]:  # warm-up
        predictor.predict([path])
    latencies = []
    for path in images:
        t = time.perf_counter()
        predictor.predict([path])
        latencies.append(time.perf_counter() - t)
    batches = [images[i : i + 8] for i in range(0, len(images) - 7, 8)]
    t = time.perf_counter()
    for batch in batches:
        predictor.predict(batch)
    throughput = 8 * len(batches) / (time.perf_counter() - t)
    latencies.sort()
    return {
        "runtime": runtime,
        "threads": threads,
        "startup_s": round(startup, 3),
        "latency_ms_median": round(1000 * latencies[len(latencies) // 2], 2),
        "latency_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 2),
        "throughput_batch8_img_s": round(throughput, 1),
        "peak_rss_mb": peak_rss_mb(),
        "torch_imported": "torch" in sys.modules,
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
    parser.add_argument("--json-out")
    parser.add_argument(
        "--worker", nargs=4, metavar=("RUNTIME", "THREADS", "MODEL", "STARTED"), help=argparse.SUPPRESS
    )
    parser.add_argument("image_list", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runtime, threads, model, started = args.worker
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
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for runtime, target in (("torch", model), ("onnx", export)):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            command = [
                sys.executable,
                __file__,
                "--worker",
                runtime,
                str(threads),
                str(target),
                str(time.time()),
            ]
            result = subprocess.run(
                [*command, *map(str, test)], capture_output=True, text=True, env=env, check=True
            )
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]))
    report = {
        "model": str(model),
        "export": str(export),
        "images": len(test),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    for threads in {row["threads"] for row in rows}:
        pair = {row["runtime"]: row for row in rows if row["threads"] == threads}
        report[f"speedup_batch1_{threads}_threads"] = round(
            pair["torch"]["latency_ms_median"] / pair["onnx"]["latency_ms_median"], 2
        )
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
