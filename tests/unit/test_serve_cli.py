"""``quickstudy serve`` on the command line, its users file, and the background jobs (no model needed)."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from quickstudy.cli import serve as serve_cli
from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import Store
from quickstudy.serve import read_users
from quickstudy.serve.jobs import BackgroundJobs, JobRunning, Report


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quickstudy")
    serve_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


@pytest.fixture
def store_and_model(tmp_path: Path) -> tuple[str, str]:
    Store.open(tmp_path / "labels.qs").close()
    (tmp_path / "model" / "versions").mkdir(parents=True)
    (tmp_path / "model" / "versions" / "v1.pt").touch()  # serve loads the model on the first predict
    return str(tmp_path / "labels.qs"), str(tmp_path / "model")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``uvicorn.run`` was called with, instead of serving."""
    import uvicorn

    calls: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.update(app=app, **options))
    return calls


def test_serve_binds_loopback_and_prints_the_url_and_a_generated_token(store_and_model, started, capsys):
    store, model = store_and_model
    assert serve_cli.cmd_serve(parse("--store", store, "--model", model)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "quickstudy serve: http://127.0.0.1:8000  (API docs: http://127.0.0.1:8000/docs)"
    token = out[1].removeprefix("token: ")
    assert len(token) >= 40 and len(out) == 2  # no note: only this machine can connect
    assert (started["host"], started["port"]) == ("127.0.0.1", 8000)
    settings = started["app"].state.settings
    assert dict(settings.tokens) == {token: None} and settings.store == Path(store).resolve()
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert serve_cli.cmd_serve(parse("--store", store, "--model", model)) == 0
    assert capsys.readouterr().out.splitlines()[1] != out[1]  # a new token each start


def test_serve_with_a_users_file_names_the_users_not_their_tokens(store_and_model, started, capsys, tmp_path):
    store, model = store_and_model
    users = tmp_path / "users.txt"
    users.write_text("# line crew\nanna: anna-secret-token-0001\n\nben:ben-secret-token-00002\n")
    args = parse(
        "--store", store, "--model", model, "--users", str(users), "--host", "0.0.0.0", "--port", "9000"
    )
    assert serve_cli.cmd_serve(args) == 0
    out = capsys.readouterr().out
    assert "http://0.0.0.0:9000" in out and "users: anna, ben" in out and "secret" not in out
    assert "token travels unencrypted" in out
    assert dict(started["app"].state.settings.tokens) == {
        "anna-secret-token-0001": "anna",
        "ben-secret-token-00002": "ben",
    }


def test_serve_options_are_checked(store_and_model, started, tmp_path, capsys):
    store, model = store_and_model
    with pytest.raises(SystemExit):
        parse("--store", store, "--model", model, "--token", "x" * 20, "--users", "u.txt")
    with pytest.raises(SystemExit):
        parse("--store", store, "--model", model, "--port", "70000")
    capsys.readouterr()
    with pytest.raises(QuickstudyError, match="--token: a token needs at least 16 characters"):
        serve_cli.cmd_serve(parse("--store", store, "--model", model, "--token", "short"))
    with pytest.raises(QuickstudyError, match="nope.qs: no such label store"):
        serve_cli.cmd_serve(parse("--store", str(tmp_path / "nope.qs"), "--model", model))
    with pytest.raises(QuickstudyError, match="not a detector folder"):
        serve_cli.cmd_serve(parse("--store", store, "--model", str(tmp_path)))
    serve_cli.cmd_serve(
        parse("--store", store, "--model", model, "--token", "t" * 16, "--max-upload-mb", "2")
    )
    assert started["app"].state.settings.max_upload_bytes == 2 * 1024 * 1024
    assert "token: tttttttttttttttt" in capsys.readouterr().out
    assert not started["app"].state.settings.store.with_name("nope.qs").exists()  # nothing created


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("anna anna-secret-token-0001\n", ":1: expected 'name: token'"),
        ("anna: anna-secret-token-0001\nanna: other-secret-token-01\n", ":2: user 'anna' is named twice"),
        ("anna: same-secret-token-0001\nben: same-secret-token-0001\n", ":2: 'ben' has the token of 'anna'"),
        ("anna: short\n", ":1: a token needs at least 16 characters"),
        ("anna: has a space in it 0001\n", ":1: a token is printable ASCII without spaces"),
        (": anna-secret-token-0001\n", ":1: a user name is non-empty"),
        ("# nobody\n\n", ": the users file names nobody"),
    ],
)
def test_a_bad_users_file_is_one_line_naming_file_and_line(tmp_path, text, problem):
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(QuickstudyError) as error:
        read_users(path)
    assert str(error.value).startswith(f"{path}{problem}") and "\n" not in str(error.value)


def test_an_unreadable_users_file_is_one_line(tmp_path):
    with pytest.raises(QuickstudyError, match=r"missing.txt: cannot read the users file \(No such file"):
        read_users(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("anna: t\xf6ken-0123456789abc\n".encode("latin-1"))
    with pytest.raises(QuickstudyError, match="latin1.txt: the users file is not UTF-8 text"):
        read_users(tmp_path / "latin1.txt")


def wait(jobs: BackgroundJobs, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (job := jobs.get(job_id)) is not None and job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert job is not None
    return job


STEP = {"all": 1.0}  # a job of one step


def test_background_jobs_run_one_at_a_time_and_report_results_and_errors():
    jobs = BackgroundJobs()
    release = threading.Event()
    first = jobs.start("learn", "anna", {"class": "a"}, lambda report: {"waited": release.wait(10)}, STEP)
    assert first["state"] == "queued" and first["progress"] == 0.0 and first["result"] is None
    with pytest.raises(JobRunning, match="learn job 1 is (queued|running); wait for it to end"):
        jobs.start("learn", "ben", {}, lambda report: {}, STEP)
    assert jobs.running() is not None and jobs.running()["id"] == 1  # type: ignore[index]
    release.set()
    done = wait(jobs, 1)
    assert (done["state"], done["result"], done["progress"], done["error"]) == (
        "done",
        {"waited": True},
        1.0,
        None,
    )
    assert jobs.running() is None

    def refused(report: Report) -> dict[str, Any]:
        raise QuickstudyError("class 'x' is not in the store's taxonomy")

    def broken(report: Report) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    failed = wait(jobs, jobs.start("learn", "ben", {}, refused, STEP)["id"])
    assert (failed["state"], failed["error"]) == ("failed", "class 'x' is not in the store's taxonomy")
    crashed = wait(jobs, jobs.start("learn", "ben", {}, broken, STEP)["id"])
    assert crashed["error"] == "internal error: ZeroDivisionError: division by zero"
    assert jobs.get(4) is None and crashed["id"] == 3 and crashed["seconds"] >= 0


def test_a_jobs_progress_follows_the_phases_it_reports_by_their_weights():
    jobs = BackgroundJobs()
    reached, go_on = threading.Event(), threading.Event()

    def work(report: Report) -> dict[str, Any]:
        report("first", 1.0)
        report("second", 0.5)
        reached.set()
        go_on.wait(10)
        report("first", 1.0)  # a late report of an earlier phase never lowers the progress
        return {}

    job = jobs.start("test", "ann", {}, work, {"first": 1.0, "skipped": 2.0, "second": 2.0})
    assert job["progress"] == 0.0 and job["phase"] is None
    assert reached.wait(10)
    running = jobs.get(job["id"])
    assert running is not None and running["state"] == "running"
    assert (running["phase"], running["progress"]) == ("second", round((1 + 2 + 1) / 5, 4))
    go_on.set()
    done = wait(jobs, job["id"])
    assert (done["state"], done["phase"], done["progress"]) == ("done", "first", 1.0)

    failed = jobs.start("test", "ann", {}, lambda report: report("nope", 0.5) or {}, {"first": 1.0})
    ended = wait(jobs, failed["id"])
    assert ended["state"] == "failed" and "unknown phase 'nope'" in ended["error"]
