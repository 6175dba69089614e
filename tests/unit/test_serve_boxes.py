"""Marking through the REST API: boxes drawn, moved, relabelled and deleted, images marked checked,
each edit carrying the version of the image it was made on (a stale one: 409 and the image as it is
now), and the command line writing the same store at the same time. No model is needed."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from quickstudy.labels.store import Store
from quickstudy.serve import ServeSettings, create_app

from .labels_fixtures import small_store

TOKEN = "shared-token-for-box-tests-0"


@pytest.fixture
def settings(tmp_path: Path) -> ServeSettings:
    """Six 40x30 images with two boxes each (classes a, b, c); a model folder never loaded."""
    small_store(tmp_path).close()
    (tmp_path / "model").mkdir()
    return ServeSettings(tmp_path / "labels.qs", tmp_path / "model", {TOKEN: None})


@pytest.fixture
def client(settings: ServeSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def ok(response: httpx.Response, code: int = 200) -> Any:
    assert response.status_code == code, response.text
    return response.json()


def image(client: TestClient, image_id: int) -> dict[str, Any]:
    return ok(client.get(f"/api/images/{image_id}"))


def test_an_image_shows_its_version_and_whether_it_is_checked(client):
    first = image(client, 1)
    assert (first["version"], first["checked"], len(first["boxes"])) == (0, True, 2)
    assert first["boxes"][0] == {
        "id": 1,
        "box": [1.0, 1.0, 10.0, 12.0],
        "class": "a",
        "author": first["boxes"][0]["author"],
        "created": first["boxes"][0]["created"],
    }


def test_create_a_box_with_a_class_none_or_a_partial_set(client):
    made = ok(
        client.post(
            "/api/images/1/boxes",
            json={"version": 0, "box": [2, 3, 20, 25], "class": "b"},
            headers={"X-Quickstudy-Author": "dora"},
        ),
        201,
    )
    box = made["box"]
    assert (box["box"], box["class"], box["author"]) == ([2, 3, 20, 25], "b", "dora")
    assert made["image"]["version"] == 1 and made["image"]["boxes"][-1] == box
    assert (made["edit"]["kind"], made["edit"]["author"], made["edit"]["payload"]["box_id"]) == (
        "add_box",
        "dora",
        box["id"],
    )
    bare = ok(client.post("/api/images/1/boxes", json={"version": 1, "box": [0, 0, 40, 30]}), 201)
    assert bare["box"]["class"] is None and bare["image"]["version"] == 2
    partial = ok(
        client.post("/api/images/1/boxes", json={"version": 2, "box": [1, 1, 4, 4], "class": ["c", "a"]}), 201
    )
    assert partial["box"]["class"] == ["a", "c"]
    assert image(client, 1) == partial["image"]


def test_patch_moves_relabels_or_both_and_keeps_what_it_is_not_given(client):
    moved = ok(client.patch("/api/boxes/1", json={"version": 0, "box": [2, 2, 12, 13]}))
    assert (moved["box"]["box"], moved["box"]["class"], moved["image"]["version"]) == ([2, 2, 12, 13], "a", 1)
    cleared = ok(client.patch("/api/boxes/1", json={"version": 1, "class": None}))
    assert (cleared["box"]["box"], cleared["box"]["class"]) == ([2, 2, 12, 13], None)
    both = ok(client.patch("/api/boxes/1", json={"version": 2, "box": [0, 0, 5, 5], "class": ["b", "c"]}))
    assert (both["box"]["box"], both["box"]["class"], both["image"]["version"]) == (
        [0, 0, 5, 5],
        ["b", "c"],
        3,
    )
    assert both["edit"]["kind"] == "update_box" and both["edit"]["payload"]["old"]["box"] == [2, 2, 12, 13]
    nothing = client.patch("/api/boxes/1", json={"version": 3})
    assert nothing.status_code == 422 and "give 'box', 'class' or both" in nothing.text


def test_delete_answers_the_box_as_it_was_and_undo_brings_it_back(client):
    before = image(client, 2)
    gone = ok(client.request("DELETE", "/api/boxes/4", json={"version": 0}))
    assert gone["box"] == before["boxes"][1] and gone["edit"]["kind"] == "delete_box"
    assert [b["id"] for b in gone["image"]["boxes"]] == [3] and gone["image"]["version"] == 1
    undone = ok(client.post("/api/taxonomy/undo", json={"edit": gone["edit"]["id"]}))
    assert undone["summary"] == ["1 box restored"]
    after = image(client, 2)
    assert after["boxes"] == before["boxes"] and after["version"] == 2
    added = ok(client.post("/api/images/2/boxes", json={"version": 2, "box": [1, 1, 5, 5]}), 201)
    preview = ok(client.post("/api/taxonomy/undo", json={"edit": added["edit"]["id"], "dry_run": True}))
    assert preview["summary"] == ["1 box will be removed"]
    ok(client.post("/api/taxonomy/undo", json={"edit": added["edit"]["id"]}))
    assert image(client, 2)["boxes"] == before["boxes"]


def test_mark_checked_no_defect_and_back_to_no_labels_yet_and_the_list_filter(client, settings):
    unlabelled = ok(client.post("/api/images/3/checked", json={"version": 0, "checked": False}))
    assert (unlabelled["image"]["checked"], unlabelled["image"]["version"]) == (False, 1)
    assert unlabelled["edit"]["kind"] == "checked"
    listed = ok(client.get("/api/images", params={"checked": "false"}))
    assert listed["total"] == 1 and [(i["id"], i["checked"]) for i in listed["images"]] == [(3, False)]
    assert ok(client.get("/api/images", params={"checked": "true"}))["total"] == 5
    version = 1
    for box in image(client, 3)["boxes"]:
        version = ok(client.request("DELETE", f"/api/boxes/{box['id']}", json={"version": version}))["image"][
            "version"
        ]
    no_defect = ok(client.post("/api/images/3/checked", json={"version": version}))  # checked by default
    assert no_defect["image"]["checked"] and no_defect["image"]["boxes"] == []
    with Store.open(settings.store, create=False) as store:
        assert store.stats()["defect_free_images"] == 1 and store.stats()["unlabelled_images"] == 0
    assert ok(client.get("/api/images", params={"checked": "false"}))["total"] == 0


def test_a_stale_edit_gets_409_with_the_image_as_it_is_now_and_changes_nothing(client, settings):
    ok(client.patch("/api/boxes/1", json={"version": 0, "box": [2, 2, 12, 13]}))  # someone else's edit
    current = image(client, 1)
    with Store.open(settings.store, create=False) as store:
        history = store.history()
    stale = [
        ("POST", "/api/images/1/boxes", {"version": 0, "box": [1, 1, 5, 5]}),
        ("PATCH", "/api/boxes/1", {"version": 0, "class": None}),
        ("PATCH", "/api/boxes/2", {"version": 0, "box": [1, 1, 5, 5]}),
        ("DELETE", "/api/boxes/2", {"version": 0}),
        ("POST", "/api/images/1/checked", {"version": 0, "checked": False}),
    ]
    for method, url, body in stale:
        response = client.request(method, url, json=body)
        assert response.status_code == 409, (method, url, response.text)
        answer = response.json()
        assert answer["image"] == current and answer["image"]["version"] == 1
        assert answer["detail"].endswith(
            "image 1 is at version 1, not 0: it was changed since; reload it and edit again"
        )
    assert image(client, 1) == current
    with Store.open(settings.store, create=False) as store:
        assert store.history() == history


def test_bad_edits_are_refused_with_a_reason(client):
    outside = client.post("/api/images/1/boxes", json={"version": 0, "box": [5, 5, 41, 9]})
    assert outside.status_code == 422 and outside.json()["detail"].endswith(
        "image 1: box [5.0, 5.0, 41.0, 9.0] lies outside the 40x30 image"
    )
    flat = client.patch("/api/boxes/1", json={"version": 0, "box": [5, 5, 5, 9]})
    assert flat.status_code == 422 and flat.json()["detail"].endswith("has zero or negative area")
    unknown = client.post("/api/images/1/boxes", json={"version": 0, "box": [1, 1, 5, 5], "class": "zebra"})
    assert unknown.status_code == 409 and "no current class 'zebra'" in unknown.json()["detail"]
    assert image(client, 1)["version"] == 0  # none of them was written
    for method, url, body in [
        ("POST", "/api/images/1/boxes", {"box": [1, 1, 5, 5]}),  # no version
        ("POST", "/api/images/1/boxes", {"version": 0, "box": [1, 1, 5]}),
        ("PATCH", "/api/boxes/1", {"version": -1, "class": None}),
        ("POST", "/api/images/1/checked", {"version": 0, "checkd": True}),
        ("DELETE", "/api/boxes/1", None),
    ]:
        assert client.request(method, url, json=body).status_code == 422, (method, url, body)
    for method, url, body, what in [
        ("POST", "/api/images/99/boxes", {"version": 0, "box": [1, 1, 5, 5]}, "image 99"),
        ("PATCH", "/api/boxes/99", {"version": 0, "class": None}, "box 99"),
        ("DELETE", "/api/boxes/99", {"version": 0}, "box 99"),
        ("POST", "/api/images/99/checked", {"version": 0}, "image 99"),
    ]:
        response = client.request(method, url, json=body)
        assert response.status_code == 404 and response.json() == {"detail": f"no {what} in the store"}


def test_two_clients_editing_one_image_on_the_same_version_one_wins(settings):
    app = create_app(settings)
    start = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def edit(x1: int) -> None:
        client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
        start.wait()
        answers.append(client.patch("/api/boxes/1", json={"version": 0, "box": [x1, 1, 20, 20]}))

    threads = [threading.Thread(target=edit, args=(x1,)) for x1 in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    won = next(a.json() for a in answers if a.status_code == 200)
    lost = next(a.json() for a in answers if a.status_code == 409)
    assert lost["image"] == won["image"] and lost["image"]["version"] == 1


_CLI_WRITER = """
import sys
from quickstudy.cli import main
store, rounds = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
for i in range(rounds):
    flags = ["--unlabelled"] if i % 2 == 0 else []
    assert main(["data", "check", "--store", store, "5", *flags]) == 0
"""


def test_the_command_line_and_the_server_write_one_store_at_once(client, settings):
    rounds = 40
    cli = subprocess.Popen(
        [sys.executable, "-c", _CLI_WRITER, str(settings.store), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert cli.stdout is not None and cli.stdout.readline() == "ready\n"
    answers = []
    version = 0
    for i in range(rounds):
        response = client.post("/api/images/1/boxes", json={"version": version, "box": [i % 30, 1, 35, 25]})
        answers.append(response)
        if response.status_code == 201:
            version = response.json()["image"]["version"]
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    assert out.count("image marked") == rounds and "locked" not in err
    assert [a.status_code for a in answers] == [201] * rounds, [
        a.text for a in answers if a.status_code != 201
    ]
    final = image(client, 1)
    assert len(final["boxes"]) == 2 + rounds and final["version"] == rounds  # no edit lost
    assert image(client, 5)["checked"] is True and image(client, 5)["version"] == rounds
