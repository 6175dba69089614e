#!/usr/bin/env python3
"""Peak resident memory of training and prediction as the store grows (issue: memory that does not grow
with the data).

Writes a synthetic line of colour frames (``SyntheticLine(frame=(W, H), colour=True)``: 1600 x 1250 =
2 MP by default, defects of 7–42 px, JPEG) as Pascal VOC, imports N of them into a store, and in a fresh
process per measurement runs the training data path on them with tiling (the rule picks it for such
frames) for a fixed number of optimisation steps, so time does not grow with N, and
the predictor over a few frames, reporting ``ru_maxrss``. (The training steps are the model's real
forward and backward on batches from the store's ``DetectionSet``, drawn as ``quickstudy train`` draws
them (``detect.loading.StepLoader``, decoded by ``--workers`` DataLoader processes), without the engine's
checkpoints.) Memory should stay flat in N: the training views are decoded from disk into a bounded
cache (``detect.data.DECODE_CACHE_BYTES``, shared out among the workers), and only boxes and view
geometry (a few bytes per tile) grow with the store. With workers, ``ru_maxrss`` is the training
process alone; the peak of the whole process tree's proportional set size (PSS: pages shared after the
fork counted once), sampled every 0.2 s, is reported beside it.

    .venv/bin/python benchmarks/memory_scaling.py --frames 200,2000 --work /tmp/mem --json-out mem.json
Smoke: --frames 10,20 --steps 2 --width 640 --height 480
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_line(folder: Path, n: int, width: int, height: int) -> None:
    """Frames 0..n-1 of the colour line as VOC (JPEG images), written once and reused."""
    import numpy as np
    from PIL import Image

    from quickstudy.data.synthetic import SyntheticLine, _voc_xml

    line = SyntheticLine(seed=0, size=64, frame=(width, height), colour=True)
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    for index in range(n):
        name = f"frame_{index:05d}"
        if (folder / "Annotations" / f"{name}.xml").exists():
            continue
        image, boxes, classes = line.sample(index)
        Image.fromarray(np.asarray(image)).save(folder / "JPEGImages" / f"{name}.jpg", quality=92)
        _voc_xml(f"{name}.jpg", image.shape, boxes, list(classes)).write(
            folder / "Annotations" / f"{name}.xml", encoding="utf-8"
        )


def tree_pss_mb(pid: int) -> float:
    """The proportional set size of process ``pid`` and all its descendants, in MB (0 for one gone)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:  # it ended meanwhile
            continue
    return total


class TreePeak:
    """The highest :func:`tree_pss_mb` of this process's tree, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.2) -> None:
        import os

        self.peak, self._pid, self._every = 0.0, os.getpid(), every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every):
            self.peak = max(self.peak, tree_pss_mb(self._pid))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def measure(store_path: Path, steps: int, image_size: int, predict: int, workers: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process: the training data path and ``steps`` optimisation steps
    of a ``tiny`` detector with batches drawn over every view of the store as ``quickstudy train`` draws
    them (one epoch's shuffle of every view, so the decode cache turns over), decoded by ``workers``
    DataLoader processes, then the predictor over ``predict`` frames; peak RSS after each."""
    import torch

    from quickstudy.detect.data import DetectionSet
    from quickstudy.detect.loading import StepIndices, StepLoader
    from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig
    from quickstudy.detect.predictor import Predictor
    from quickstudy.detect.training import DEFAULT_BATCH_SIZE
    from quickstudy.labels import Store
    from quickstudy.train import step_generator

    torch.set_num_threads(1)
    tree = TreePeak()
    store = Store.open(store_path, create=False)
    samples = store.samples("train")
    classes = store.classes()
    started = time.perf_counter()
    data = DetectionSet.from_samples(samples, classes, image_size, channels=3, tiling=True)
    config = DetectorConfig(
        **{**ARCHITECTURES["tiny"], "image_size": image_size, "channels": 3, "tiling": True}
    )
    model = DefectDetector(classes, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    per_epoch = max(steps, len(data) // DEFAULT_BATCH_SIZE)
    loader = StepLoader(
        data.images, StepIndices(len(data), per_epoch, DEFAULT_BATCH_SIZE, 0), 0, steps, workers
    )
    for step in range(steps):
        indices, views = loader.get(step)
        images, targets = data.batch(indices, step_generator(0, step), decoded=views)
        out = model(images, targets)
        assert isinstance(out, dict)
        optimizer.zero_grad()
        (out["loss_localize"] + out["loss_recognize"]).backward()
        optimizer.step()
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_seconds = time.perf_counter() - started
    train_tree = tree.peak
    loader.close()
    Predictor(model.eval()).predict([s.path for s in store.samples("test")[:predict]])
    return {
        "frames": len(samples),
        "views": len(data),
        "workers": workers,
        "train_steps": steps,
        "train_peak_mb": round(train_peak),
        "train_tree_pss_peak_mb": round(train_tree),
        "train_seconds": round(train_seconds, 1),
        "peak_mb_after_predict": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "tree_pss_peak_mb_after_predict": round(tree.stop()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", default="200,2000", help="store sizes N1,N2,... (TRAIN frames)")
    parser.add_argument(
        "--work", type=Path, help="folder for the frames and stores (required unless measuring)"
    )
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1250)
    parser.add_argument("--image-size", type=int, default=512, help="tile size")
    parser.add_argument("--steps", type=int, default=40, help="about this many training steps per store")
    parser.add_argument("--predict", type=int, default=5, help="frames predicted after training")
    parser.add_argument(
        "--workers", default="0", help="DataLoader workers W1,W2,...: every store size is measured with each"
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--measure", metavar="STORE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(Path(args.measure), args.steps, args.image_size, args.predict, int(args.workers))
        print(json.dumps(result))
        return 0

    from quickstudy.labels import Store
    from quickstudy.labels.formats import import_voc

    if args.work is None:
        parser.error("--work is required")
    sizes = [int(n) for n in args.frames.split(",")]
    line = args.work / f"line-{args.width}x{args.height}"
    test_frames = 20
    write_line(line, max(sizes) + test_frames, args.width, args.height)
    results = []
    for n in sizes:
        store_path = args.work / f"store-{n}.qs"
        if not store_path.exists():
            with Store.open(store_path) as store:
                import_voc(store, line)
                images = store.images()  # the first n frames train, the last ones test, the rest unused
                splits: dict[int, str | None] = {im.image_id: None for im in images}
                splits.update({im.image_id: "train" for im in images[:n]})
                splits.update({im.image_id: "test" for im in images[-test_frames:]})
                store.set_splits(splits)
        for workers in args.workers.split(","):
            command = [
                *(sys.executable, __file__, "--steps", str(args.steps), "--image-size", str(args.image_size)),
                *("--predict", str(args.predict), "--workers", workers, "--measure", str(store_path)),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    report = {"command": " ".join(sys.argv), "frame": [args.width, args.height], "results": results}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
