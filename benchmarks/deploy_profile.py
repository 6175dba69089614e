#!/usr/bin/env python3
"""Where an export's two ONNX graphs spend their time, by onnxruntime's own profiler (issue 21): per
graph, the sum over nodes of each node's median kernel time, and the operator types that take most.

    .venv/bin/python benchmarks/deploy_profile.py /tmp/deploy-speed/export [OTHER_EXPORT ...]

Several exports (say, one written before a change and one after) are run in turn, call by call, so that
on a shared machine they see the same load. One thread; the dense graph gets one random image of the
export's input size, the embedding graph random FPN maps of that image and 50 random boxes (the
predictor's usual count). Kernel times leave out onnxruntime's per-call overhead and the numpy around
the graphs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

BOXES = 50


def feeds(session: Any, graph: str, export: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = {i.name: i.shape for i in session.get_inputs()}
    if graph == "dense":
        return {"images": rng.random([1, *shapes["images"][1:]], dtype=np.float32)}
    out = {
        name: rng.random(shape, dtype=np.float32)
        for name, shape in shapes.items()
        if name.startswith("features")
    }
    corners = rng.uniform(0, 150, (BOXES, 2)).astype(np.float32)
    out["boxes"] = np.concatenate([corners, corners + rng.uniform(5, 50, (BOXES, 2)).astype(np.float32)], 1)
    with np.load(export / "memory.npz") as memory:
        out["prototypes"] = memory["prototypes"].astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    runs = []
    for export in args.exports:
        for graph in ("dense", "embed"):
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.enable_profiling = True
            options.profile_file_prefix = f"/tmp/deploy_profile_{graph}"
            session = ort.InferenceSession(
                str(export / f"{graph}.onnx"), options, providers=["CPUExecutionProvider"]
            )
            runs.append((export, graph, session, feeds(session, graph, export, rng)))
    for _ in range(args.calls):  # in turn: every export sees the same load
        for _, _, session, inputs in runs:
            session.run(None, inputs)
    report = []
    for export, graph, session, _ in runs:
        profile = Path(session.end_profiling())
        nodes: dict[str, list[float]] = defaultdict(list)
        kinds: dict[str, str] = {}
        for event in json.loads(profile.read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                nodes[event["name"]].append(event["dur"] / 1000)
                kinds[event["name"]] = event["args"].get("op_name", "?")
        profile.unlink()
        by_kind: dict[str, float] = defaultdict(float)
        for name, times in nodes.items():
            by_kind[kinds[name]] += statistics.median(times)
        top = sorted(by_kind.items(), key=lambda item: -item[1])[: args.top]
        report.append(
            {
                "export": str(export),
                "graph": graph,
                "kernel_ms": round(sum(by_kind.values()), 2),
                "top_ops_ms": {kind: round(ms, 2) for kind, ms in top},
            }
        )
    print(json.dumps({"onnxruntime": ort.__version__, "graphs": report}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
