"""The REST API through FastAPI's test client, on a small synthetic store and a tiny trained detector."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from PIL import Image

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect import ModelFolder, learn_class
from quickstudy.detect.fewshot import LEARN_PHASES, LOCALIZER_STEPS
from quickstudy.detect.model import TINY, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.labels.records import ImportedBox, ImportedImage
from quickstudy.labels.store import Store
from quickstudy.labels.taxonomy import RETIRE_MEANINGS
from quickstudy.serve import ServeSettings, create_app
from quickstudy.serve.outcome import learn_outcome
from quickstudy.serve.routers.learn import LEARN_JOB_PHASES
from quickstudy.serve.schemas import RetireClass

TOKEN = "shared-token-for-tests-0123"
CLASSES = ("dent", "pit")  # compact shapes: a tiny detector fits four images of them in seconds


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def xyxy(box: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``labels.qs``: four TRAIN images of dent and pit and one TEST image whose box has no class;
    ``model/``: a tiny detector trained on the four."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("served")
    line = SyntheticLine(seed=0, size=64, defect_types=CLASSES, max_per_image=1, p_second_type=0)
    images = line.imported_images(folder, range(4)) + line.imported_images(
        folder, [4], split="test", labelled=False
    )
    with Store.open(folder / "labels.qs") as store:
        store.import_images(images, source="fixture", author="fixture")
        train_detector(
            store,
            folder / "model",
            epochs=100,
            batch_size=4,
            lr=5e-3,
            config=DetectorConfig(**TINY, image_size=64),
            weighting="equal",
        )
    torch.set_num_threads(threads)
    return folder


@dataclass
class Served:
    client: TestClient
    settings: ServeSettings
    template: Path

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        """The JSON of a request that must succeed."""
        response = self.client.request(method, url, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()


def serve(template: Path, folder: Path, tokens: dict[str, str | None], **limits: int) -> ServeSettings:
    shutil.copy(template / "labels.qs", folder / "labels.qs")
    shutil.copytree(template / "model", folder / "model")
    return ServeSettings(folder / "labels.qs", folder / "model", tokens, **limits)  # type: ignore[arg-type]


@pytest.fixture
def served(template: Path, tmp_path: Path, one_torch_thread: None) -> Iterator[Served]:
    """A server on a copy of the template's store and model, and a client with the token."""
    settings = serve(template, tmp_path, {TOKEN: None})
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield Served(client, settings, template)


def wait_for(served: Served, job: dict[str, Any], seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = served.call("GET", f"/api/jobs/{job['id']}")
    return job


# -- authentication ----------------------------------------------------------------------------------

API_ROUTES = {
    ("GET", "/api/health"),
    ("POST", "/api/predict"),
    ("GET", "/api/images"),
    ("POST", "/api/images"),
    ("GET", "/api/images/{image_id}"),
    ("GET", "/api/images/{image_id}/file"),
    ("POST", "/api/images/{image_id}/checked"),
    ("POST", "/api/images/{image_id}/boxes"),
    ("PATCH", "/api/boxes/{box_id}"),
    ("DELETE", "/api/boxes/{box_id}"),
    ("GET", "/api/taxonomy"),
    ("GET", "/api/taxonomy/history"),
    ("POST", "/api/taxonomy/add"),
    ("POST", "/api/taxonomy/rename"),
    ("POST", "/api/taxonomy/merge"),
    ("POST", "/api/taxonomy/split"),
    ("POST", "/api/taxonomy/retire"),
    ("POST", "/api/taxonomy/undo"),
    ("POST", "/api/learn"),
    ("GET", "/api/jobs/{job_id}"),
    ("GET", "/api/models"),
    ("POST", "/api/models/use"),
    ("POST", "/api/models/undo"),
    ("GET", "/api/cache"),
    ("GET", "/api/unknowns"),
    ("POST", "/api/unknowns/{key}/name"),
    ("POST", "/api/suggest"),
}


def test_every_api_route_refuses_a_missing_or_wrong_token_with_a_bare_401(served):
    routes = {
        (method, context.path)
        for context in iter_route_contexts(served.client.app.routes)
        if context.path and context.path.startswith("/api/")
        for method in context.methods or ()
    }
    assert routes == API_ROUTES  # a new route must join this walk (and get its own tests)
    openapi = served.client.get("/openapi.json").json()["paths"]
    assert {(m.upper(), p) for p, ops in openapi.items() for m in ops} == API_ROUTES
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token-at-all-000"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    anonymous = TestClient(served.client.app)
    for method, path in sorted(routes):
        url = path.replace("{image_id}", "1").replace("{job_id}", "1").replace("{box_id}", "1")
        url = url.replace("{key}", "0123abcd")
        for headers in wrong:
            response = anonymous.request(method, url, headers=headers)
            assert response.status_code == 401, (method, url, headers, response.text)
            assert response.json() == {"detail": "unauthorized"}
            assert response.headers["www-authenticate"] == "Bearer"
    assert served.client.get("/api/health").status_code == 200


def test_docs_and_their_assets_are_served_without_a_token_and_from_the_package(served):
    anonymous = TestClient(served.client.app)
    page = anonymous.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    for url in urls:
        assert anonymous.get(url).status_code == 200, url
    assert "SwaggerUIBundle" in anonymous.get("/static/swagger/swagger-ui-bundle.js").text
    assert anonymous.get("/static/swagger/LICENSE").status_code == 200
    assert anonymous.get("/openapi.json").json()["info"]["title"] == "quickstudy"
    assert anonymous.get("/redoc").status_code == 404


def test_with_a_users_file_each_edit_carries_the_name_of_its_token(template, tmp_path):
    anna, ben = "anna-token-0123456789", "ben-token-0123456789"
    settings = serve(template, tmp_path, {anna: "anna", ben: "ben"})
    client = TestClient(create_app(settings))
    for token, name in ((anna, "add1"), (ben, "add2")):
        response = client.post(
            "/api/taxonomy/add",
            json={"name": name},
            headers={"Authorization": f"Bearer {token}", "X-Quickstudy-Author": "mallory"},
        )
        assert response.status_code == 200, response.text
    history = client.get("/api/taxonomy/history", headers={"Authorization": f"Bearer {ben}"}).json()
    assert [(e["payload"]["name"], e["author"]) for e in history[-2:]] == [("add1", "anna"), ("add2", "ben")]
    assert client.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_with_the_shared_token_the_client_names_the_author(served):
    served.call("POST", "/api/taxonomy/add", json={"name": "named"}, headers={"X-Quickstudy-Author": "carol"})
    served.call("POST", "/api/taxonomy/add", json={"name": "anonymous"})
    history = served.call("GET", "/api/taxonomy/history")
    assert [e["author"] for e in history[-2:]] == ["carol", "web"]


# -- health, images, uploads ---------------------------------------------------------------------------


def test_health_names_the_model_and_taxonomy_versions(served):
    health = served.call("GET", "/api/health")
    assert health["status"] == "ok" and health["model_version"] == 1
    with served.settings.open_store() as store:
        assert health["taxonomy_version"] == store.taxonomy_version() == 2


def test_images_list_filters_and_pages(served):
    everything = served.call("GET", "/api/images")
    assert everything["total"] == 5 and [i["id"] for i in everything["images"]] == [1, 2, 3, 4, 5]
    page = served.call("GET", "/api/images", params={"limit": 2, "offset": 1})
    assert page["total"] == 5 and [i["id"] for i in page["images"]] == [2, 3]
    train = served.call("GET", "/api/images", params={"split": "train"})
    assert train["total"] == 4 and {i["split"] for i in train["images"]} == {"train"}
    dents = served.call("GET", "/api/images", params={"class": "dent"})
    with served.settings.open_store() as store:
        expected = [s.image_id for s in store.samples() if any(b.allowed == {"dent"} for b in s.boxes)]
    assert [i["id"] for i in dents["images"]] == expected and 0 < len(expected) < 4
    assert served.call("GET", "/api/images", params={"split": "untagged"})["total"] == 0
    first = everything["images"][0]
    assert (first["name"], first["width"], first["height"], first["boxes"]) == ("line_0.png", 64, 64, 1)
    assert served.client.get("/api/images", params={"limit": 0}).status_code == 422
    assert served.client.get("/api/images", params={"split": "holdout"}).status_code == 422


def test_an_image_shows_each_box_as_a_class_no_class_or_a_partial_set(served):
    first = served.call("GET", "/api/images/1")
    assert first["boxes"][0]["class"] in CLASSES and first["boxes"][0]["author"] == "fixture"
    assert served.call("GET", "/api/images/5")["boxes"][0]["class"] is None  # imported without class
    name = first["boxes"][0]["class"]
    served.call("POST", "/api/taxonomy/split", json={"source": name, "targets": ["light", "deep"]})
    assert served.call("GET", "/api/images/1")["boxes"][0]["class"] == ["deep", "light"]
    served.call("POST", "/api/taxonomy/retire", json={"name": "deep", "meaning": "other-types"})
    assert served.call("GET", "/api/images/1")["boxes"][0]["class"] == "light"
    # deep as a type no class names: the box may be light or that type, so nothing is known of it
    served.call("POST", "/api/taxonomy/retire", json={"name": "deep", "meaning": "unnamed"})
    assert served.call("GET", "/api/images/1")["boxes"][0]["class"] is None
    missing = served.client.get("/api/images/99")
    assert missing.status_code == 404 and missing.json() == {"detail": "no image 99 in the store"}


def test_image_file_returns_the_stored_bytes(served):
    response = served.client.get("/api/images/2/file")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (served.template / "line_1.png").read_bytes()
    assert served.client.get("/api/images/99/file").status_code == 404


def test_upload_keeps_the_bytes_under_their_hash_and_imports_an_unlabelled_image(served, tmp_path):
    jpeg = io.BytesIO()
    Image.fromarray(noise(40, 30)).save(jpeg, format="JPEG")
    data = jpeg.getvalue()
    response = served.client.post(
        "/api/images",
        files={"file": ("../../escape.png", data, "image/png")},  # a JPEG, whatever its name says
        data={"split": "test"},
        headers={"X-Quickstudy-Author": "dora"},
    )
    assert response.status_code == 201, response.text
    image = response.json()
    kept = served.settings.uploads / f"{hashlib.sha256(data).hexdigest()}.jpg"
    assert kept.read_bytes() == data
    assert not (tmp_path.parent / "escape.png").exists() and not list(tmp_path.glob("**/escape.png"))
    assert (image["name"], image["width"], image["height"], image["split"], image["boxes"]) == (
        kept.name,
        40,
        30,
        "test",
        [],
    )
    assert served.client.get(f"/api/images/{image['id']}/file").content == data
    assert not image["checked"]  # imported as not yet labelled, so "no labels yet" finds it
    unlabelled = served.call("GET", "/api/images", params={"checked": False})["images"]
    assert [i["id"] for i in unlabelled] == [image["id"]]
    history = served.call("GET", "/api/taxonomy/history")
    assert (history[-1]["kind"], history[-1]["author"]) == ("import", "dora")
    again = served.client.post("/api/images", files={"file": ("other-name.jpg", data)})
    assert again.status_code == 409
    assert again.json()["detail"] == f"'other-name.jpg': already in the store as image {image['id']}"
    assert served.call("GET", "/api/images")["total"] == 6


def one_line_refusal(served: Served, data: bytes, status: int, words: str, name: str = "x.png") -> None:
    response = served.client.post("/api/images", files={"file": (name, data)})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail, detail
    assert served.client.get("/api/health").status_code == 200  # and the server keeps serving


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 grey PNG whose header claims ``width`` x ``height``."""
    data = bytearray(png(np.zeros((1, 1), dtype=np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_bad_uploads_are_refused_in_one_line_and_nothing_is_kept(served, monkeypatch):
    one_line_refusal(served, b"hello, not an image", 415, "not an image in a format this server takes")
    gif = io.BytesIO()
    Image.fromarray(noise(8, 8)).save(gif, format="GIF")
    one_line_refusal(served, gif.getvalue(), 415, "not an image in a format")
    jpeg = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(jpeg, format="JPEG")
    one_line_refusal(served, jpeg.getvalue()[: len(jpeg.getvalue()) // 2], 422, "truncated or damaged")
    one_line_refusal(served, bomb_png(100_000, 100_000), 413, "possible decompression bomb")
    one_line_refusal(served, b"", 422, "an empty file")
    one_line_refusal(served, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415, "not an image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own limit, below the server's
    one_line_refusal(served, png(noise(40, 30)), 413, "possible decompression bomb")
    one_line_refusal(served, png(noise(40, 40)), 413, "possible decompression bomb")  # PIL raises past 2x
    assert not served.settings.uploads.exists() or not list(served.settings.uploads.iterdir())
    assert served.call("GET", "/api/images")["total"] == 5


def test_uploads_over_the_size_limit_get_413(template, tmp_path):
    settings = serve(template, tmp_path, {TOKEN: None}, max_upload_bytes=10_000)
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"})
    image = png(noise(110, 100))  # a little over 10 000 bytes: noise does not compress
    assert 10_000 < len(image) < 12_000
    response = client.post("/api/predict", files={"file": ("big.png", image)})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("'big.png': larger than the upload limit of")
    fifty = b"\0" * (50 * 1024 * 1024)
    for url in ("/api/images", "/api/predict"):
        assert client.post(url, files={"file": ("huge.png", fifty)}).status_code == 413
    assert client.get("/api/health").status_code == 200


# -- predict -------------------------------------------------------------------------------------------


def test_predict_gives_boxes_in_the_uploaded_images_own_pixels(served):
    # what the library's predictor finds in the file, the API finds in its uploaded bytes, in the same
    # pixels (the geometry of other sizes and aspects: test_geometry.py)
    path = served.template / "line_3.png"
    wide = io.BytesIO()
    Image.open(path).convert("RGB").save(wide, format="PNG")  # another encoding of the same pixels
    prediction = served.call("POST", "/api/predict", files={"file": ("wide.png", wide.getvalue())})
    assert prediction["model_version"] == 1
    found = prediction["detections"]
    assert found and all(set(d) == {"box", "class", "score"} for d in found)
    expected = Predictor.from_dir(served.settings.model).predict([path])[0]
    assert [d["class"] for d in found] == [d.class_name for d in expected]
    assert torch.allclose(torch.tensor([d["box"] for d in found]), torch.tensor([d.box for d in expected]))
    assert all(0 <= d["box"][0] < d["box"][2] <= 64 and 0 <= d["box"][1] < d["box"][3] <= 64 for d in found)
    assert served.client.post("/api/predict", files={"file": ("x.txt", b"text")}).status_code == 415


# -- taxonomy ------------------------------------------------------------------------------------------


def test_taxonomy_lists_classes_with_their_box_counts(served):
    listing = served.call("GET", "/api/taxonomy")
    with served.settings.open_store() as store:
        per_class = store.stats()["per_class"]
    assert listing["classes"] == [{"name": n, "boxes": per_class[n]} for n in CLASSES]
    assert sum(per_class.values()) == 4 and listing["taxonomy_version"] == 2


def test_a_dry_run_says_what_a_split_does_to_boxes_and_changes_nothing(served):
    before = served.call("GET", "/api/taxonomy")
    history = served.call("GET", "/api/taxonomy/history")
    n = next(c["boxes"] for c in before["classes"] if c["name"] == "dent")
    body = {"source": "dent", "targets": ["dent_light", "dent_deep"]}
    dry = served.call("POST", "/api/taxonomy/split", json={**body, "dry_run": True})
    assert dry["dry_run"] and dry["edit"]["kind"] == "split" and dry["taxonomy_version"] == 2
    assert dry["changes"] == [
        {"boxes": n, "before": "dent", "after": ["dent_deep", "dent_light"], "unnamed": False}
    ]
    assert dry["summary"] == [
        f"{n} box{'' if n == 1 else 'es'} labelled dent will mean one of {{dent_deep, dent_light}}"
    ]
    assert served.call("GET", "/api/taxonomy") == before
    assert served.call("GET", "/api/taxonomy/history") == history
    done = served.call("POST", "/api/taxonomy/split", json=body)
    assert not done["dry_run"] and done["changes"] == dry["changes"] and done["taxonomy_version"] == 3
    assert done["summary"][0].endswith("now mean one of {dent_deep, dent_light}")
    assert served.call("GET", "/api/taxonomy")["partial_label_sets"] == {"dent_deep | dent_light": n}


def test_each_taxonomy_operation_goes_through_the_store_and_reports_its_effect(served):
    n_dent, n_pit = (c["boxes"] for c in served.call("GET", "/api/taxonomy")["classes"])
    added = served.call("POST", "/api/taxonomy/add", json={"name": "crack"})
    assert added["summary"] == ["no box changes meaning"] and added["edit"]["payload"]["name"] == "crack"
    renamed = served.call("POST", "/api/taxonomy/rename", json={"old": "pit", "new": "pits"})
    assert renamed["changes"] == [{"boxes": n_pit, "before": "pit", "after": "pits", "unnamed": False}]
    merged = served.call("POST", "/api/taxonomy/merge", json={"sources": ["dent", "pits"], "target": "round"})
    assert sorted((c["before"], c["after"], c["boxes"]) for c in merged["changes"]) == [
        ("dent", "round", n_dent),
        ("pits", "round", n_pit),
    ]
    retired = served.call("POST", "/api/taxonomy/retire", json={"name": "round", "dry_run": True})
    assert retired["summary"] == [
        f"{n_dent + n_pit} boxes labelled round will have no class: a type no class names: never named "
        "as another class in training (no pseudo-labels)"
    ]
    with served.settings.open_store() as store:
        assert store.classes() == ["crack", "round"] and store.taxonomy_version() == 5
    history = served.call("GET", "/api/taxonomy/history")
    assert [e["kind"] for e in history[-3:]] == ["add", "rename", "merge"]


def test_retire_says_what_its_boxes_become_for_each_meaning(served):
    assert get_args(RetireClass.model_fields["meaning"].annotation) == RETIRE_MEANINGS  # the store's list
    n_pit = next(c["boxes"] for c in served.call("GET", "/api/taxonomy")["classes"] if c["name"] == "pit")
    previews = {
        meaning: served.call(
            "POST", "/api/taxonomy/retire", json={"name": "pit", "meaning": meaning, "dry_run": True}
        )
        for meaning in RETIRE_MEANINGS
    }
    assert previews["unnamed"]["summary"] == [
        f"{n_pit} boxes labelled pit will have no class: a type no class names: never named as another "
        "class in training (no pseudo-labels)"
    ]
    assert previews["other-types"]["summary"] == [
        f"{n_pit} boxes labelled pit will have no class: of the other current classes: training may "
        "pseudo-label them as one"
    ]
    assert [c["unnamed"] for c in previews["unnamed"]["changes"]] == [True]
    assert [c["unnamed"] for c in previews["other-types"]["changes"]] == [False]
    assert previews["unnamed"]["edit"]["payload"]["meaning"] == "unnamed"

    served.call("POST", "/api/taxonomy/retire", json={"name": "pit", "meaning": "other-types"})
    with served.settings.open_store() as store:
        pits = [b for s in store.samples() for b in s.boxes if not b.allowed]
        assert len(pits) >= n_pit and not any(b.unnamed for b in pits)  # pseudo-labels welcome
    changed = served.call("POST", "/api/taxonomy/retire", json={"name": "pit", "meaning": "unnamed"})
    assert changed["summary"] == [
        f"{n_pit} boxes without a current class (other types) are now a type no class names: never "
        "named as another class in training (no pseudo-labels)"
    ]
    history = served.call("GET", "/api/taxonomy/history")
    assert [(e["payload"]["meaning"], e["payload"].get("previous")) for e in history[-2:]] == [
        ("other-types", None),
        ("unnamed", "other-types"),
    ]
    with served.settings.open_store() as store:
        assert sum(b.unnamed for s in store.samples() for b in s.boxes) == n_pit
    undone = served.call("POST", "/api/taxonomy/undo", json={"edit": history[-1]["id"]})
    assert undone["summary"] == [
        f"{n_pit} boxes without a current class (unnamed) are now of the other current classes: "
        "training may pseudo-label them as one"
    ]
    bad = served.client.post("/api/taxonomy/retire", json={"name": "dent", "meaning": "gone"})
    assert bad.status_code == 422


def test_a_refused_taxonomy_change_is_a_409_with_the_stores_reason(served):
    taken = served.client.post("/api/taxonomy/add", json={"name": "dent"})
    assert taken.status_code == 409 and taken.json()["detail"].endswith("class 'dent' already exists")
    missing = served.client.post("/api/taxonomy/retire", json={"name": "nope", "dry_run": True})
    assert missing.status_code == 409 and "no current class 'nope'" in missing.json()["detail"]
    misspelt = served.client.post("/api/taxonomy/add", json={"name": "x", "dryrun": True})
    assert misspelt.status_code == 422
    one = served.client.post("/api/taxonomy/split", json={"source": "dent", "targets": ["only"]})
    assert one.status_code == 422
    with served.settings.open_store() as store:
        assert store.classes() == list(CLASSES) and store.taxonomy_version() == 2


def test_undo_names_the_edit_it_undoes_and_refuses_a_stale_one(served):
    served.call("POST", "/api/taxonomy/add", json={"name": "crack"}, headers={"X-Quickstudy-Author": "eve"})
    added = served.call("GET", "/api/taxonomy/history")[-1]
    served.call("POST", "/api/taxonomy/rename", json={"old": "crack", "new": "cracks"})
    stale = served.client.post("/api/taxonomy/undo", json={"edit": added["id"]})
    assert stale.status_code == 409, stale.text
    assert stale.json()["detail"].startswith(
        f"edit {added['id']} is no longer the latest: edit {added['id'] + 1}"
    )
    with served.settings.open_store() as store:
        assert "cracks" in store.classes()  # nothing was undone
    preview = served.call("POST", "/api/taxonomy/undo", json={"dry_run": True})
    assert (preview["edit"]["id"], preview["edit"]["kind"]) == (added["id"] + 1, "rename")
    assert preview["summary"] == ["no box changes meaning"]
    assert not served.call("GET", "/api/taxonomy/history")[-1]["undone"]
    served.call("POST", "/api/taxonomy/undo", json={"edit": added["id"] + 1})
    undone = served.call("POST", "/api/taxonomy/undo", json={"edit": added["id"]})
    assert (undone["edit"]["id"], undone["edit"]["author"], undone["edit"]["undone"]) == (
        added["id"],
        "eve",
        True,
    )
    with served.settings.open_store() as store:
        assert store.classes() == list(CLASSES)
    refused = served.client.post("/api/taxonomy/undo", json={})
    assert (
        refused.status_code == 409
        and "cannot undo add: 2 box label(s) use class 'pit'" in refused.json()["detail"]
    )


def test_the_command_line_and_the_server_work_on_one_store_at_once(served):
    with Store.open(served.settings.store, create=False) as cli:  # as `quickstudy taxonomy` holds it
        cli.taxonomy.add("from_cli", author="cli")
        served.call("POST", "/api/taxonomy/add", json={"name": "from_web"})
        assert cli.classes()[-2:] == ["from_cli", "from_web"]
        cli.taxonomy.rename("from_web", "renamed_by_cli", author="cli")
        names = [c["name"] for c in served.call("GET", "/api/taxonomy")["classes"]]
        assert names[-2:] == ["from_cli", "renamed_by_cli"]


# -- learn and model versions --------------------------------------------------------------------------


def add_marked_scratch(served: Served, folder: Path) -> int:
    """A TRAIN image with one box marked ``scratch``, added as the command line would."""
    line = SyntheticLine(seed=0, size=64, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    pixels, boxes, _ = line.sample(10)
    path = folder / "scratch.png"
    Image.fromarray(pixels).save(path)
    with Store.open(served.settings.store, create=False) as store:
        store.taxonomy.add("scratch", author="test")
        box = ImportedBox(xyxy(boxes[0]), "scratch")
        store.import_images([ImportedImage(path, 64, 64, [box], split="train")], source="test")
        return store.images()[-1].image_id


def test_learn_leaves_the_recognizer_to_learn_s_check_by_default(served, tmp_path):
    image_id = add_marked_scratch(served, tmp_path)
    job = served.call("POST", "/api/learn", json={"class": "scratch", "images": [image_id]})
    assert wait_for(served, job)["state"] == "done"
    note = served.call("GET", "/api/models")["versions"][1]["note"]
    # one support image leaves none to hold out: learn tunes the head by itself
    assert "(recognition head adapted by itself: one support image, none to hold out;" in note


def test_learn_runs_as_a_job_and_writes_a_new_current_version(served, tmp_path):
    image_id = add_marked_scratch(served, tmp_path)
    job = served.call(
        "POST",
        "/api/learn",
        json={"class": "scratch", "images": [image_id], "adapt_recognizer": True},
        headers={"X-Quickstudy-Author": "fay"},
    )
    assert job["kind"] == "learn" and job["author"] == "fay" and job["state"] in ("queued", "running")
    job = wait_for(served, job)
    assert job["state"] == "done", job
    assert (job["result"]["version"], job["result"]["previous_version"], job["progress"]) == (2, 1, 1.0)
    assert job["phase"] == "exports"  # no before/after to predict with one support image and none held out
    assert job["result"]["outcome"]["basis"] == "none"  # one support image, none held out: it says so
    models = served.call("GET", "/api/models")
    assert models["current"] == 2 and [v["version"] for v in models["versions"]] == [1, 2]
    assert models["versions"][1]["classes"] == [*CLASSES, "scratch"] and models["versions"][1]["current"]
    assert "(recognition head adapted: " in models["versions"][1]["note"]
    image = (tmp_path / "scratch.png").read_bytes()
    assert served.call("POST", "/api/predict", files={"file": ("s.png", image)})["model_version"] == 2

    assert served.call("POST", "/api/models/undo")["current"] == 1
    assert served.call("POST", "/api/predict", files={"file": ("s.png", image)})["model_version"] == 1
    first = served.client.post("/api/models/undo")
    assert first.status_code == 409 and first.json()["detail"].endswith(
        "version 1 is the first; nothing to undo"
    )
    assert served.call("POST", "/api/models/use", json={"version": 2})["current"] == 2
    unknown = served.client.post("/api/models/use", json={"version": 7})
    assert unknown.status_code == 409 and "no version 7" in unknown.json()["detail"]


def test_suggest_ranks_the_unlabelled_images_as_quickstudy_suggest_does(served, tmp_path):
    from quickstudy.detect.suggest import suggest_images

    for seed in (1, 2, 3):  # uploads are unlabelled; the fixture's images are all checked
        data = png(noise(64, 64, seed))
        assert served.client.post("/api/images", files={"file": (f"u{seed}.png", data)}).status_code == 201
    predictor = Predictor.from_dir(served.settings.model)
    for class_name in (None, CLASSES[0]):
        with Store.open(served.settings.store, create=False) as store:
            expected, unlabelled = suggest_images(predictor, store, class_name, n=2)
        job = served.call("POST", "/api/suggest", json={"class": class_name, "n": 2})  # of 3
        assert job["kind"] == "suggest"
        job = wait_for(served, job)
        assert (job["state"], job["phase"], job["progress"]) == ("done", "rank", 1.0), job
        result = job["result"]
        assert (result["class"], result["model_version"], result["unlabelled"]) == (class_name, 1, 3)
        assert unlabelled == 3
        assert [(r["image"], r["why"]) for r in result["suggestions"]] == [
            (s.image_id, s.why) for s in expected
        ]
        assert [r["score"] for r in result["suggestions"]] == pytest.approx([s.score for s in expected])
        assert result["suggestions"][0]["name"] == expected[0].path.name
    unknown = served.client.post("/api/suggest", json={"class": "crack"})
    assert unknown.status_code == 409 and unknown.json()["detail"].startswith(
        "class 'crack' is not in the model (dent, pit)"
    )
    assert served.client.post("/api/suggest", json={"n": 0}).status_code == 422
    with Store.open(served.settings.store, create=False) as store:
        store.set_checked([image.image_id for image in store.images()], author="test")
    failed = wait_for(served, served.call("POST", "/api/suggest", json={}))
    assert failed["state"] == "failed" and failed["error"].endswith(
        "every image is checked; nothing is waiting for a look"
    )


def test_a_failed_learn_leaves_the_current_version_as_it_was(served, tmp_path, monkeypatch):
    image_id = add_marked_scratch(served, tmp_path)
    unknown = wait_for(served, served.call("POST", "/api/learn", json={"class": "crack"}))
    assert unknown["state"] == "failed" and "'crack' is not in the store's taxonomy" in unknown["error"]

    def disk_full(self: ModelFolder, payload: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ModelFolder, "save", disk_full)
    failed = wait_for(
        served, served.call("POST", "/api/learn", json={"class": "scratch", "images": [image_id]})
    )
    assert failed["state"] == "failed" and failed["result"] is None
    assert failed["error"] == "internal error: OSError: [Errno 28] No space left on device"
    assert ModelFolder(served.settings.model).numbers() == [1]
    assert served.call("GET", "/api/models")["current"] == 1
    missing = served.client.post("/api/learn", json={"class": "scratch", "images": [99]})
    assert missing.status_code == 404 and missing.json() == {"detail": "no image 99 in the store"}
    assert served.client.get("/api/jobs/99").status_code == 404


def test_learn_reports_each_phase_in_order_and_each_localizer_step(served, tmp_path):
    image_id = add_marked_scratch(served, tmp_path)
    line = SyntheticLine(seed=1, size=64, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    pixels, boxes, _ = line.sample(11)
    Image.fromarray(pixels).save(tmp_path / "held_out.png")
    held_out = ImportedImage(
        tmp_path / "held_out.png", 64, 64, [ImportedBox(xyxy(boxes[0]), "scratch")], split="test"
    )
    with served.settings.open_store() as store:
        store.import_images([held_out], source="test")
    calls: list[tuple[str, float]] = []
    with served.settings.open_store() as store:
        path = next(i.path for i in store.images() if i.image_id == image_id)
        version = learn_class(
            served.settings.model,
            store,
            "scratch",
            images=[path],
            localizer=True,
            progress=lambda phase, done: calls.append((phase, done)),
        )
        phases = [phase for phase, _ in calls]
        assert list(dict.fromkeys(phases)) == ["support", "localizer", "recognizer", "threshold"]
        assert [p for p in LEARN_PHASES if p in phases] == list(dict.fromkeys(phases))  # in order
        steps = [done for phase, done in calls if phase == "localizer"]
        assert steps == [0.0] + [(k + 1) / LOCALIZER_STEPS for k in range(LOCALIZER_STEPS)]
        assert calls[-1] == ("threshold", 1.0)
        calls.clear()
        learn_outcome(
            served.settings.model,
            store,
            "scratch",
            [path],
            1,
            version,
            progress=lambda side, done: calls.append((side, done)),
        )
    assert calls == [("before", 0.0), ("before", 1.0), ("after", 0.0), ("after", 1.0)]  # one chunk
    assert set(LEARN_JOB_PHASES) >= {*LEARN_PHASES, "exports", "before", "after"}
