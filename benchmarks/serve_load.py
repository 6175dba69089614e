#!/usr/bin/env python3
"""Load on ``quickstudy serve`` over loopback (issue 22): N ``POST /api/predict`` from C concurrent
httpx clients, optionally with writers drawing, moving and deleting boxes at the same time.

The server is the real command (``python -m quickstudy serve``) in a subprocess on a free loopback
port, so that its resident memory is read from ``/proc/PID/status`` (VmRSS at start, middle and end of
the load; VmHWM). Reported: p50/p95/p99 latency, requests/s, errors, ``database is locked`` seen by a
client or in the server's log, and for the writers the edits made, the stale edits (409) retried, and
the edits lost: after the load, each image the writers touched must hold exactly its original boxes
plus the boxes the writers' acknowledged edits leave, and the journal exactly one entry per edit.

    .venv/bin/python benchmarks/serve_load.py --work /tmp/serve-load --json-out /tmp/serve-load.json
    .venv/bin/python benchmarks/serve_load.py --work /tmp/serve-load --writer
    .venv/bin/python benchmarks/serve_load.py --store labels.qs --model runs/demo --image some.png

With no --store/--model, a tiny store (five 64x64 synthetic images of dent and pit) and a tiny detector
trained on it are built in --work (seconds); --image defaults to one of those images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TOKEN = "load-benchmark-token-0123456789"
LOCKED = "database is locked"
WRITER_AUTHOR = "load-writer-{}"


def build_tiny(folder: Path) -> tuple[Path, Path, Path]:
    """``(store, model, image)``: five synthetic 64x64 images (four TRAIN with dent/pit boxes, one
    TEST) and a tiny detector trained on them."""
    import torch

    from quickstudy.data.synthetic import SyntheticLine
    from quickstudy.detect.model import TINY, DetectorConfig
    from quickstudy.detect.training import train_detector
    from quickstudy.labels.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    line = SyntheticLine(seed=0, size=64, defect_types=("dent", "pit"), max_per_image=1, p_second_type=0)
    images = line.imported_images(folder, range(4)) + line.imported_images(folder, [4], split="test")
    with Store.open(folder / "labels.qs") as store:
        store.import_images(images, source="serve_load", author="serve_load")
        train_detector(
            store,
            folder / "model",
            epochs=60,
            batch_size=4,
            lr=5e-3,
            config=DetectorConfig(**TINY, image_size=64),
            weighting="equal",
        )
    torch.set_num_threads(threads)
    return folder / "labels.qs", folder / "model", folder / "line_4.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


class Server:
    """``quickstudy serve`` in a subprocess on a free loopback port; its output goes to ``log``."""

    def __init__(self, store: Path, model: Path, log: Path, start_seconds: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "quickstudy", "serve", "--store", str(store), "--model", str(model)]
        command += ["--token", TOKEN, "--port", str(self.port)]
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/api/health", headers=headers(), timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the server did not answer in {start_seconds} s: {log.read_text()[-2000:]}"
                )
            time.sleep(0.2)

    def memory_mb(self) -> dict[str, float]:
        return {name: kb / 1024 for name, kb in memory_kb(self.process.pid).items()}

    def locked_in_log(self) -> int:
        return self.log.read_text(errors="replace").count(LOCKED)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def headers(author: str | None = None) -> dict[str, str]:
    sent = {"Authorization": f"Bearer {TOKEN}"}
    if author:
        sent["X-Quickstudy-Author"] = author
    return sent


@dataclass
class PredictLoad:
    """``requests`` predictions shared among ``clients`` threads; each keeps its own httpx client."""

    url: str
    image: bytes
    requests: int
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    locked: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    half: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.requests:
                return None
            self._next += 1
            if self._next > self.requests // 2:
                self.half.set()
            return self._next

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, headers=headers(), timeout=60) as client:
            while self._take() is not None:
                started = time.perf_counter()
                try:
                    response = client.post(
                        "/api/predict", files={"file": ("part.png", self.image, "image/png")}
                    )
                except httpx.HTTPError as error:
                    with self._lock:
                        self.errors.append(f"predict: {type(error).__name__}: {error}")
                    continue
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.locked += response.text.count(LOCKED)
                    if response.status_code == 200 and "detections" in response.json():
                        self.latencies.append(elapsed)
                    else:
                        self.errors.append(f"predict: {response.status_code} {response.text[:200]}")

    def run(self) -> float:
        """Runs the load to its end; the wall time in seconds."""
        threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.done.set()
        return time.perf_counter() - started


@dataclass
class Writer:
    """One client that draws, moves and deletes boxes of its own on the given images while ``until``
    is not set (and at least ``min_edits`` times), sending each edit with the image's version and
    retrying a stale one (409) on the version the answer gives. ``mine`` is what its acknowledged
    edits leave: box id to ``(image id, box)``."""

    url: str
    name: str
    images: dict[int, tuple[int, int]]
    until: threading.Event
    min_edits: int
    seed: int
    edits: int = 0
    stale: int = 0
    locked: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    mine: dict[int, tuple[int, list[float]]] = field(default_factory=dict)

    def _box(self, rng: random.Random, image_id: int) -> list[float]:
        width, height = self.images[image_id]
        x1, y1 = rng.randrange(0, width - 4), rng.randrange(0, height - 4)
        return [
            float(x1),
            float(y1),
            float(rng.randrange(x1 + 2, width + 1)),
            float(rng.randrange(y1 + 2, height + 1)),
        ]

    def _edit(
        self,
        client: httpx.Client,
        versions: dict[int, int],
        image_id: int,
        method: str,
        url: str,
        body: dict[str, Any],
    ) -> Any:
        """The answer to an edit, sent again on the current version while it is stale; None on an error."""
        for _ in range(50):
            started = time.perf_counter()
            try:
                response = client.request(method, url, json={**body, "version": versions[image_id]})
            except httpx.HTTPError as error:
                self.errors.append(f"{method} {url}: {type(error).__name__}: {error}")
                return None
            self.locked += response.text.count(LOCKED)
            if response.status_code == 409 and "image" in response.json():
                self.stale += 1
                versions[image_id] = response.json()["image"]["version"]
                continue
            if response.status_code >= 300:
                self.errors.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
                return None
            self.latencies.append(time.perf_counter() - started)
            answer = response.json()
            versions[image_id] = answer["image"]["version"]
            self.edits += 1
            return answer
        self.errors.append(f"{method} {url}: still stale after 50 tries")
        return None

    def run(self) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(base_url=self.url, headers=headers(self.name), timeout=60) as client:
            versions = {i: client.get(f"/api/images/{i}").json()["version"] for i in self.images}
            while not self.until.is_set() or self.edits < self.min_edits:
                image_id = rng.choice(sorted(self.images))
                here = [b for b, (i, _) in self.mine.items() if i == image_id]
                roll = rng.random()
                if not here or (len(here) < 3 and roll < 0.4):
                    body = {"box": self._box(rng, image_id)}
                    answer = self._edit(
                        client, versions, image_id, "POST", f"/api/images/{image_id}/boxes", body
                    )
                    if answer is not None:
                        self.mine[answer["box"]["id"]] = (image_id, answer["box"]["box"])
                elif roll < 0.7:
                    box_id, body = rng.choice(here), {"box": self._box(rng, image_id)}
                    answer = self._edit(client, versions, image_id, "PATCH", f"/api/boxes/{box_id}", body)
                    if answer is not None:
                        self.mine[box_id] = (image_id, answer["box"]["box"])
                else:
                    box_id = rng.choice(here)
                    if (
                        self._edit(client, versions, image_id, "DELETE", f"/api/boxes/{box_id}", {})
                        is not None
                    ):
                        del self.mine[box_id]
                if len(self.errors) > 20:
                    return


def lost_edits(
    url: str, original: dict[int, list[tuple[int, list[float]]]], writers: list[Writer]
) -> list[str]:
    """Where the images differ from their original boxes plus what the writers' acknowledged edits
    leave, one line each."""
    expected = {image_id: sorted(boxes) for image_id, boxes in original.items()}
    for writer in writers:
        for box_id, (image_id, box) in writer.mine.items():
            expected[image_id] = sorted([*expected[image_id], (box_id, box)])
    lost = []
    with httpx.Client(base_url=url, headers=headers(), timeout=60) as client:
        for image_id, boxes in expected.items():
            held = sorted((b["id"], b["box"]) for b in client.get(f"/api/images/{image_id}").json()["boxes"])
            if held != boxes:
                lost.append(f"image {image_id}: holds {held}, the acknowledged edits leave {boxes}")
    return lost


def journal_entries(store: Path, authors: set[str]) -> int:
    """How many box edits the store's journal holds from these authors."""
    from quickstudy.labels.store import Store

    with Store.open(store, create=False) as opened:
        kinds = ("add_box", "update_box", "delete_box")
        return sum(1 for e in opened.history() if e["author"] in authors and e["kind"] in kinds)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_load(
    store: Path,
    model: Path,
    image: Path,
    work: Path,
    requests: int = 2000,
    clients: int = 8,
    writers: int = 0,
    min_edits: int = 0,
    warmup: int = 5,
) -> dict[str, Any]:
    """Serves a copy of ``store`` and ``model`` and puts the load on it; the measurements."""
    work.mkdir(parents=True, exist_ok=True)
    served_store, served_model = work / "served.qs", work / "served-model"
    shutil.copy(store, served_store)
    shutil.rmtree(served_model, ignore_errors=True)
    shutil.copytree(model, served_model)
    server = Server(served_store, served_model, work / "server.log")
    try:
        data = image.read_bytes()
        with httpx.Client(base_url=server.url, headers=headers(), timeout=60) as client:
            for _ in range(warmup):  # the first request loads the model
                client.post(
                    "/api/predict", files={"file": ("part.png", data, "image/png")}
                ).raise_for_status()
            listed = client.get("/api/images", params={"limit": 50}).json()["images"]
            details = [client.get(f"/api/images/{i['id']}").json() for i in listed]
        sizes = {d["id"]: (d["width"], d["height"]) for d in details}
        original = {d["id"]: [(b["id"], b["box"]) for b in d["boxes"]] for d in details}
        memory = {"start": server.memory_mb()}
        load_before = os.getloadavg()
        load = PredictLoad(server.url, data, requests, clients)
        editing = [
            Writer(server.url, WRITER_AUTHOR.format(k), sizes, load.done, min_edits, seed=k)
            for k in range(writers)
        ]
        threads = [threading.Thread(target=w.run) for w in editing]
        for thread in threads:
            thread.start()

        def at_half() -> None:
            load.half.wait()
            memory["middle"] = server.memory_mb()

        halfway = threading.Thread(target=at_half)
        halfway.start()
        seconds = load.run()
        halfway.join()
        memory["end"] = server.memory_mb()
        load_after = os.getloadavg()
        for thread in threads:
            thread.join()
        lost = lost_edits(server.url, original, editing) if editing else []
        locked_in_log = server.locked_in_log()
    finally:
        server.stop()
    journaled = journal_entries(served_store, {w.name for w in editing}) if editing else 0
    made = sum(w.edits for w in editing)
    if journaled != made:
        lost.append(f"the journal holds {journaled} box edits by the writers, who made {made}")
    latencies = sorted(load.latencies)
    edit_latencies = sorted(t for w in editing for t in w.latencies)
    return {
        "requests": requests,
        "clients": clients,
        "ok": len(latencies),
        "errors": len(load.errors),
        "error_examples": load.errors[:5],
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "latency_ms": {f"p{q}": 1000 * percentile(latencies, q) if latencies else None for q in (50, 95, 99)},
        "server_memory_mb": {
            "rss_start": memory["start"]["VmRSS"],
            "rss_middle": memory["middle"]["VmRSS"],
            "rss_end": memory["end"]["VmRSS"],
            "hwm_end": memory["end"]["VmHWM"],
        },
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "database_is_locked": load.locked + sum(w.locked for w in editing) + locked_in_log,
        "writers": [
            {
                "name": w.name,
                "edits": w.edits,
                "stale_retried": w.stale,
                "errors": len(w.errors),
                "error_examples": w.errors[:5],
            }
            for w in editing
        ],
        "writer_edits": made,
        "edit_latency_ms": {
            f"p{q}": 1000 * percentile(edit_latencies, q) if edit_latencies else None for q in (50, 95, 99)
        },
        "writer_errors": sum(len(w.errors) for w in editing),
        "lost_edits": lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, help="label store to serve (a copy of it; default: a tiny one)")
    parser.add_argument("--model", type=Path, help="model folder to serve (a copy of it; with --store)")
    parser.add_argument("--image", type=Path, help="the image every predict sends (default: a tiny store's)")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/quickstudy-serve-load"), help="scratch folder"
    )
    parser.add_argument("--requests", type=int, default=2000, help="predict requests in all (default: 2000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent predict clients (default: 8)")
    parser.add_argument("--writer", action="store_true", help="box edits at the same time as the load")
    parser.add_argument("--writers", type=int, default=1, help="writer clients with --writer (default: 1)")
    parser.add_argument("--json-out", type=Path, help="write the measurements here as JSON")
    args = parser.parse_args()
    if (args.store is None) != (args.model is None):
        parser.error("give --store and --model together, or neither")
    if args.store is None:
        store, model, image = build_tiny(args.work / "tiny")
    else:
        store, model = args.store, args.model
        image = args.image
        if image is None:
            parser.error("--image is needed with --store")
    result = run_load(
        store,
        model,
        args.image or image,
        args.work / "run",
        args.requests,
        args.clients,
        args.writers if args.writer else 0,
    )
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    failed = (
        result["errors"] or result["writer_errors"] or result["lost_edits"] or result["database_is_locked"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
