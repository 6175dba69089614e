"""The prediction cache beside the store, the gallery filters that read it, paging in SQL over
10,000 images, unknown groups (listed and named), and a learn job's before/after report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from quickstudy.detect.predictor import Predictor
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import Store
from quickstudy.serve import create_app
from quickstudy.serve.cache import cache_path, disagrees
from tests.unit import test_serve_api as api
from tests.unit.test_serve_api import Served, template  # noqa: F401  (the module's fixture)


@pytest.fixture
def quiet(template: Path, tmp_path: Path, one_torch_thread: None) -> Iterator[Served]:  # noqa: F811
    """A server whose cache is filled only when the test says so."""
    settings = api.serve(template, tmp_path, {api.TOKEN: None}, fill_cache=False)  # type: ignore[arg-type]
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {api.TOKEN}"}) as client:
        yield Served(client, settings, template)


def filler(served: Served) -> Any:
    return served.client.app.state.filler  # type: ignore[attr-defined]


def ids(served: Served, **params: Any) -> list[int]:
    return [i["id"] for i in served.call("GET", "/api/images", params={"limit": 1000, **params})["images"]]


def test_predict_embedded_gives_each_detection_its_proposals_embedding(template, one_torch_thread):  # noqa: F811
    predictor = Predictor.from_dir(template / "model")
    paths = [template / f"line_{k}.png" for k in range(4)]
    plain = predictor.predict(paths)
    embedded = predictor.predict_embedded(paths)
    assert [[d for d, _ in found] for found in embedded] == plain and any(plain)
    for found, proposals in zip(embedded, predictor.proposals(paths), strict=True):
        for detection, vector in found:
            row = (proposals["boxes"] == torch.tensor(detection.box)).all(1).nonzero().flatten()
            assert len(row) == 1 and torch.equal(vector, proposals["embeddings"][row[0]])
            assert abs(float(vector.norm()) - 1) < 1e-4


def test_the_cache_fills_beside_the_store_for_the_current_version(quiet):
    assert quiet.call("GET", "/api/cache") == {
        "state": "stopped",
        "model_version": 1,
        "done": 0,
        "total": 5,
        "error": None,
    }
    assert filler(quiet).fill(limit=2) and quiet.call("GET", "/api/cache")["done"] == 2
    assert filler(quiet).fill() and not filler(quiet).fill()  # a second round finds nothing to do
    assert quiet.call("GET", "/api/cache")["state"] == "ready"
    assert cache_path(quiet.settings.store).is_file()
    key = quiet.client.app.state.model.identity()  # type: ignore[attr-defined]
    expected = Predictor.from_dir(quiet.settings.model).predict([quiet.template / "line_0.png"])[0]
    cached = filler(quiet).cache.detections(key, 1)
    assert [(d["class"], d["score"]) for d in cached] == [(d.class_name, round(d.score, 4)) for d in expected]
    # another current version is another model: its predictions are missing until filled
    api.add_marked_scratch(quiet, quiet.settings.store.parent)
    api.wait_for(quiet, quiet.call("POST", "/api/learn", json={"class": "scratch", "images": [6]}))
    progress = quiet.call("GET", "/api/cache")
    assert (progress["model_version"], progress["done"], progress["total"]) == (2, 0, 6)
    filler(quiet).fill()
    assert quiet.call("GET", "/api/cache")["done"] == 6


def test_the_background_job_fills_the_cache_while_the_server_runs(template, tmp_path, one_torch_thread):  # noqa: F811
    settings = api.serve(template, tmp_path, {api.TOKEN: None})
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {api.TOKEN}"}) as client:
        served = Served(client, settings, template)
        progress = served.call("GET", "/api/cache")
        for _ in range(600):
            if progress["state"] == "ready":
                break
            time.sleep(0.1)
            progress = served.call("GET", "/api/cache")
        assert (progress["state"], progress["done"], progress["total"]) == ("ready", 5, 5)


def put(
    served: Served, image_id: int, detections: list[tuple[list[float], str, float]], vectors=None
) -> None:
    key = served.client.app.state.model.identity()  # type: ignore[attr-defined]
    rows = [{"box": box, "class": name, "score": score} for box, name, score in detections]
    filler(served).cache.put(key, image_id, rows, vectors or {})


def boxes_of(served: Served, image_id: int) -> list[dict[str, Any]]:
    return served.call("GET", f"/api/images/{image_id}")["boxes"]


def test_gallery_filters_unknown_no_labels_and_disagreement(quiet):
    with Store.open(quiet.settings.store, create=False) as store:
        store.set_checked([1, 2, 3, 4], True, author="test")
        store.set_checked([5], False, author="test")
    one, two, _, four = (boxes_of(quiet, i)[0] for i in (1, 2, 3, 4))
    put(quiet, 1, [(one["box"], one["class"], 0.9)])  # agrees
    other = "pit" if two["class"] == "dent" else "dent"
    put(quiet, 2, [(two["box"], other, 0.9)])  # found, named otherwise
    put(quiet, 3, [])  # the box missed
    put(quiet, 4, [(four["box"], four["class"], 0.9), ([0, 0, 5, 5], "unknown", 0.7)])  # a false alarm
    put(quiet, 5, [([1, 1, 9, 9], "unknown", 0.8)])
    assert ids(quiet, disagrees=True) == [2, 3, 4]
    assert ids(quiet, unknown=True) == [4, 5]
    listing = quiet.call("GET", "/api/images", params={"unknown": True})
    assert listing["predictions"]["done"] == 5 and quiet.call("GET", "/api/images")["predictions"] is None
    # relabelling the box as the model names it ends the disagreement: its verdict is judged again
    version = quiet.call("GET", "/api/images/2")["version"]
    quiet.call("PATCH", f"/api/boxes/{two['id']}", json={"version": version, "class": other})
    assert ids(quiet, disagrees=True) == [3, 4]
    # no labels yet: not checked and no boxes (image 5 is not checked but holds a box without class)
    assert ids(quiet, no_labels=True) == []
    five = quiet.call("GET", "/api/images/5")
    quiet.call("DELETE", f"/api/boxes/{five['boxes'][0]['id']}", json={"version": five["version"]})
    assert ids(quiet, no_labels=True) == [5] and ids(quiet, no_labels=True, unknown=True) == [5]
    assert ids(quiet, no_labels=True, split="train") == []


def test_disagreement_is_about_matches_names_and_misses():
    box = ((0.0, 0.0, 10.0, 10.0), frozenset({"pit"}))
    found = {"box": [0, 0, 10, 9], "class": "pit", "score": 0.9}
    assert not disagrees([found], [box])
    assert disagrees([{**found, "class": "unknown"}], [box])
    assert not disagrees([{**found, "class": "dent"}], [((0.0, 0.0, 10.0, 10.0), frozenset())])
    assert disagrees([], [box]) and disagrees([found], []) and not disagrees([], [])
    assert not disagrees([{**found, "class": "dent"}], [((0, 0, 10, 10), frozenset({"pit", "dent"}))])


def test_paging_10000_images_is_done_in_sql(quiet, monkeypatch):
    with Store.open(quiet.settings.store, create=False) as store, store.transaction():
        for k in range(10_000):
            store.query(
                "INSERT INTO images (path, width, height, checksum, split, checked) VALUES (?, 64, 64, ?, ?, 0)",
                (f"/nowhere/many_{k}.png", f"{k:040d}", "val" if k % 2 else None),
            )

    def everything(*args: Any) -> None:
        raise AssertionError("the list read every image into Python")

    monkeypatch.setattr(Store, "samples", everything)
    monkeypatch.setattr(Store, "images", everything)
    page = quiet.call("GET", "/api/images", params={"limit": 50, "offset": 9_990})
    assert page["total"] == 10_005 and [i["id"] for i in page["images"]] == list(range(9_991, 10_006))
    assert page["images"][-1]["name"] == "many_9999.png"
    val = quiet.call("GET", "/api/images", params={"split": "val", "limit": 3, "offset": 4_998})
    assert val["total"] == 5_000 and [i["id"] for i in val["images"]] == [10_003, 10_005]
    assert quiet.call("GET", "/api/images", params={"no_labels": True, "limit": 1})["total"] == 10_000


def test_unknown_groups_are_listed_by_similarity_and_named_into_boxes(quiet):
    east, north = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    tilt = np.array([0.995, 0.0995, 0.0])
    put(quiet, 1, [([2, 2, 20, 20], "unknown", 0.9), ([30, 30, 50, 50], "unknown", 0.6)], {0: east, 1: north})
    put(quiet, 2, [([4, 4, 24, 24], "unknown", 0.8)], {0: tilt})
    put(quiet, 3, [([40, 2, 60, 20], "unknown", 0.7)], {0: east})
    listing = quiet.call("GET", "/api/unknowns", params={"similarity": 0.9})
    assert (listing["unknowns"], listing["grouped"], [g["size"] for g in listing["groups"]]) == (4, 4, [3, 1])
    big = listing["groups"][0]
    assert [(m["image"], m["detection"]) for m in big["members"]] == [(1, 0), (2, 0), (3, 0)]
    assert big["members"][0]["name"] == "line_0.png" and big["members"][0]["box"] == [2, 2, 20, 20]
    assert quiet.call("GET", "/api/unknowns", params={"similarity": 0.999})["groups"][0]["size"] == 2
    before = [len(boxes_of(quiet, i)) for i in (1, 2, 3)]

    named = quiet.call(
        "POST",
        f"/api/unknowns/{big['key']}/name",
        json={"class": "crack", "similarity": 0.9},
        headers={"X-Quickstudy-Author": "gil"},
    )
    assert named["class"] == "crack" and named["class_created"] and len(named["added"]) == 3
    assert [len(boxes_of(quiet, i)) for i in (1, 2, 3)] == [n + 1 for n in before]
    new = [b for b in boxes_of(quiet, 2) if b["class"] == "crack"]
    assert new[0]["box"] == [4, 4, 24, 24] and new[0]["author"] == "gil"
    history = quiet.call("GET", "/api/taxonomy/history")
    assert [(e["kind"], e["author"]) for e in history[-4:]] == [("add", "gil")] + [("add_box", "gil")] * 3
    # named detections are covered by their boxes now; the same key again is refused in one line
    left = quiet.call("GET", "/api/unknowns", params={"similarity": 0.9})
    assert (left["unknowns"], [g["size"] for g in left["groups"]]) == (1, [1])
    again = quiet.client.post(f"/api/unknowns/{big['key']}/name", json={"class": "crack", "similarity": 0.9})
    assert again.status_code == 409 and "list them again" in again.json()["detail"]
    # the learn job takes the named boxes as the new type's support
    job = api.wait_for(quiet, quiet.call("POST", "/api/learn", json={"class": "crack", "images": [1, 2, 3]}))
    assert job["state"] == "done", job


def test_naming_a_group_gives_an_overlapping_box_without_class_its_class(quiet):
    five = boxes_of(quiet, 5)[0]
    assert five["class"] is None
    put(quiet, 5, [(five["box"], "unknown", 0.8)], {0: np.array([0.0, 0.0, 1.0])})
    group = quiet.call("GET", "/api/unknowns")["groups"][0]
    named = quiet.call("POST", f"/api/unknowns/{group['key']}/name", json={"class": "dent"})
    assert (named["class_created"], named["added"], named["labelled"]) == (False, [], [five["id"]])
    assert [b["class"] for b in boxes_of(quiet, 5)] == ["dent"]


def test_a_learn_job_reports_before_and_after_on_held_out_images(quiet, tmp_path):
    line = api.SyntheticLine(seed=3, size=64, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    with Store.open(quiet.settings.store, create=False) as store:
        store.taxonomy.add("scratch", author="test")
        images = []
        for k in range(4):
            pixels, boxes, _ = line.sample(20 + k)
            path = tmp_path / f"scratch_{k}.png"
            Image.fromarray(pixels).save(path)
            box = ImportedBox(api.xyxy(boxes[0]), "scratch")
            images.append(ImportedImage(path, 64, 64, [box], split="train" if k < 2 else "test"))
        store.import_images(images, source="test")
    job = api.wait_for(quiet, quiet.call("POST", "/api/learn", json={"class": "scratch", "images": [6, 7]}))
    outcome = job["result"]["outcome"]
    assert (outcome["basis"], outcome["images"]) == ("held-out", 2)
    before, after = outcome["before"], outcome["after"]
    assert (before["version"], after["version"]) == (1, 2)
    for side in (before, after):
        counts = [side[key]["count"] for key in ("named_right", "unknown", "named_other", "missed")]
        assert sum(counts) == side["boxes"] == 2
    assert before["named_right"]["count"] == 0 and before["image_recall"] == 0  # it did not know the type
    # with no held-out image left: the support images' leave-one-out result instead
    job = api.wait_for(
        quiet, quiet.call("POST", "/api/learn", json={"class": "scratch", "images": [6, 7, 8, 9]})
    )
    outcome = job["result"]["outcome"]
    assert (outcome["basis"], outcome["images"], outcome["after"]["leave_one_out"]) == (
        "leave-one-out",
        4,
        True,
    )
    assert outcome["before"]["version"] == 2 and outcome["after"]["boxes"] == 4
    assert "no image outside the support" in outcome["note"]
