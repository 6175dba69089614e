"""The short version of the serve load benchmark (benchmarks/serve_load.py), through its own code: a
real ``quickstudy serve`` on loopback, predictions from concurrent clients while two writers edit the
same images (so stale edits happen and are retried), and no error, no lost edit, no ``database is
locked``."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from serve_load import Server, Writer, build_tiny, headers, lost_edits, run_load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(store, model, image)``: the benchmark's tiny store and detector."""
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.mark.slow
def test_predictions_under_load_with_two_writers_lose_nothing_and_never_see_a_locked_store(tiny, tmp_path):
    store, model, image = tiny
    result = run_load(store, model, image, tmp_path, requests=200, clients=4, writers=2, min_edits=15)
    assert (result["ok"], result["errors"]) == (200, 0), result["error_examples"]
    assert result["writer_errors"] == 0, [w["error_examples"] for w in result["writers"]]
    assert result["writer_edits"] >= 30
    assert result["lost_edits"] == []
    assert result["database_is_locked"] == 0
    assert result["server_memory_mb"]["rss_start"] > 0 and result["requests_per_s"] > 0


@pytest.mark.slow
def test_the_lost_edit_check_finds_an_acknowledged_edit_the_store_does_not_hold(tiny, tmp_path):
    store, model, _ = tiny
    server = Server(store, model, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, headers=headers(), timeout=60) as client:
            boxes = [(b["id"], b["box"]) for b in client.get("/api/images/1").json()["boxes"]]
        liar = Writer(server.url, "liar", {1: (64, 64)}, threading.Event(), min_edits=0, seed=0)
        liar.mine[999] = (1, [1.0, 1.0, 5.0, 5.0])
        held = lost_edits(server.url, {1: boxes}, [])
        lost = lost_edits(server.url, {1: boxes}, [liar])
    finally:
        server.stop()
    assert boxes and held == []
    assert (
        len(lost) == 1 and lost[0].startswith("image 1: holds ") and "(999, [1.0, 1.0, 5.0, 5.0])" in lost[0]
    )
