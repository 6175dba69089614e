"""The REST API over an export folder: predicts through onnxruntime as the runtime does, says it is
an export, refuses learn and version changes in one line, and imports no torch."""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from quickstudy.cli import serve as serve_cli
from quickstudy.deploy.export import export_onnx, refresh_exports
from quickstudy.deploy.runtime import OnnxPredictor
from quickstudy.detect import learn_class
from quickstudy.labels.store import Store
from quickstudy.serve import ServeSettings, create_app
from tests.unit import test_serve_api as api

TOKEN = api.TOKEN
template = api.template  # the tiny detector trained on four synthetic line images, and its store
OFF = ["learn", "models use", "models undo", "unknown groups"]


@pytest.fixture(scope="module")
def export(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(template / "model", tmp_path_factory.mktemp("served-export") / "export")


def export_server(template: Path, export: Path, folder: Path) -> api.Served:
    shutil.copy(template / "labels.qs", folder / "labels.qs")
    settings = ServeSettings(folder / "labels.qs", export, {TOKEN: None})
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"})
    return api.Served(client, settings, template)


@pytest.fixture
def served(template: Path, export: Path, tmp_path: Path) -> Iterator[api.Served]:
    copy = Path(shutil.copytree(export, tmp_path / "export"))
    with export_server(template, copy, tmp_path).client as client:
        yield api.Served(client, ServeSettings(tmp_path / "labels.qs", copy, {TOKEN: None}), template)


def test_predict_on_an_export_gives_the_onnx_predictors_detections(served):
    path = served.template / "line_3.png"
    upload = io.BytesIO()
    Image.open(path).convert("RGB").save(upload, format="PNG")  # another encoding of the same pixels
    prediction = served.call("POST", "/api/predict", files={"file": ("frame.png", upload.getvalue())})
    expected = OnnxPredictor(served.settings.model).predict([path])[0]
    found = prediction["detections"]
    assert prediction["model_version"] == 1 and found
    assert [d["class"] for d in found] == [d.class_name for d in expected]
    for ours, theirs in zip(found, expected, strict=True):
        assert ours["box"] == pytest.approx(theirs.box, abs=1e-4)
        assert ours["score"] == pytest.approx(theirs.score, abs=1e-6)
    assert served.client.post("/api/predict", files={"file": ("x.txt", b"text")}).status_code == 415


def test_learn_and_version_changes_are_refused_in_one_line(served):
    source = served.template / "model"
    for url, body, feature in (
        ("/api/learn", {"class": "dent"}, "learn"),
        ("/api/models/use", {"version": 1}, "models use"),
        ("/api/models/undo", None, "models undo"),
    ):
        response = served.client.post(url, json=body)
        assert response.status_code == 409, (url, response.text)
        detail = response.json()["detail"]
        assert "\n" not in detail
        assert detail.startswith(f"{feature} needs the model folder: {served.settings.model} is an export")
        assert f"({source.resolve()})" in detail
    assert served.client.get("/api/jobs/1").status_code == 404  # no learn job was started


def test_health_and_models_say_the_model_is_an_export_and_what_is_off(served, template, tmp_path):
    health = served.call("GET", "/api/health")
    assert (health["kind"], health["disabled"], health["model_version"]) == ("export", OFF, 1)
    models = served.call("GET", "/api/models")
    assert (models["kind"], models["disabled"], models["current"]) == ("export", OFF, 1)
    assert [(v["version"], v["current"], v["classes"]) for v in models["versions"]] == [
        (1, True, list(api.CLASSES))
    ]
    (tmp_path / "folder").mkdir()
    settings = api.serve(template, tmp_path / "folder", {TOKEN: None})
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        health, models = client.get("/api/health").json(), client.get("/api/models").json()
    assert (health["kind"], health["disabled"], models["kind"], models["disabled"]) == (
        "model",
        [],
        "model",
        [],
    )


def test_the_auth_walk_holds_on_an_export(served):
    api.test_every_api_route_refuses_a_missing_or_wrong_token_with_a_bare_401(served)


def test_learn_on_the_source_model_reaches_the_served_export(template, tmp_path, one_torch_thread):
    settings = api.serve(template, tmp_path, {TOKEN: None})
    export = export_onnx(settings.model, tmp_path / "export")
    (tmp_path / "exported").mkdir()
    with export_server(template, export, tmp_path / "exported").client as client:
        assert client.get("/api/models").json()["versions"][0]["classes"] == list(api.CLASSES)
        api.add_marked_scratch(api.Served(client, settings, template), tmp_path)
        with Store.open(settings.store, create=False) as store:
            # the prototype alone: the network stays the exported one, so the class memory can follow
            learn_class(
                settings.model,
                store,
                "scratch",
                images=[tmp_path / "scratch.png"],
                localizer=False,
                recognizer=False,
            )
        assert refresh_exports(settings.model) == [export.resolve()]
        response = client.get("/api/health")
        assert response.status_code == 200, response.text
        health = response.json()
        assert (health["model_version"], health["kind"]) == (2, "export")
        models = client.get("/api/models").json()
        assert models["versions"][0]["classes"] == [*api.CLASSES, "scratch"]


def test_serve_prints_that_the_model_is_an_export(template, export, tmp_path, capsys, monkeypatch):
    import uvicorn

    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app))
    shutil.copy(template / "labels.qs", tmp_path / "labels.qs")
    parser = argparse.ArgumentParser(prog="quickstudy")
    serve_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--store", str(tmp_path / "labels.qs"), "--model", str(export)])
    assert serve_cli.cmd_serve(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == (
        f"model: {export.resolve()} is an export (version 1 of {(template / 'model').resolve()}); "
        "off: learn, models use, models undo, unknown groups (they need the model folder)"
    )
    assert started["app"].state.model.kind == "export"  # type: ignore[attr-defined]


def test_a_server_on_an_export_imports_no_torch(template, export, tmp_path):
    shutil.copy(template / "labels.qs", tmp_path / "labels.qs")
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from quickstudy.serve import ServeSettings, create_app\n"
        f"settings = ServeSettings({str(tmp_path / 'labels.qs')!r}, {str(export)!r}, {{'{TOKEN}': None}})\n"
        f"client = TestClient(create_app(settings), headers={{'Authorization': 'Bearer {TOKEN}'}})\n"
        f"image = open({str(template / 'line_3.png')!r}, 'rb').read()\n"
        "found = client.post('/api/predict', files={'file': ('x.png', image)}).json()['detections']\n"
        "assert found, 'no detections'\n"
        "assert client.post('/api/learn', json={'class': 'dent'}).status_code == 409\n"
        "assert client.post('/api/models/undo').status_code == 409\n"
        "assert client.post('/api/suggest', json={}).status_code == 409\n"
        "assert client.get('/api/health').json()['kind'] == 'export'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_an_export_answers_unknown_groups_with_a_one_line_409(served):
    for method, url in (("GET", "/api/unknowns"), ("POST", "/api/unknowns/0123abcd/name")):
        response = served.client.request(method, url, json={"class": "x"} if method == "POST" else None)
        assert response.status_code == 409, response.text
        assert "unknown groups need the model folder" in response.json()["detail"]
    suggest = served.client.post("/api/suggest", json={})
    assert suggest.status_code == 409 and suggest.json()["detail"].startswith(
        "suggestions need the model folder"
    )
