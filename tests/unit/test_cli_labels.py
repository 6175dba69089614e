"""The data and taxonomy commands as a person types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quickstudy.cli import main
from quickstudy.labels.formats import export_voc

from .labels_fixtures import small_store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_split_taxonomy_history_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_voc(small_store(tmp_path / "src"), tmp_path / "voc")
    store = str(tmp_path / "cli.qs")
    code, out, _ = run(
        capsys, "data", "import", str(tmp_path / "voc"), "--format", "voc", "--store", store, "--json"
    )
    assert code == 0 and json.loads(out)["boxes"] == 12
    assert run(capsys, "data", "split", "--store", store, "--fraction", "0.5", "--seed", "1")[0] == 0
    assert run(capsys, "taxonomy", "split", "a", "a1,a2", "--store", store, "--author", "ana")[0] == 0
    code, out, _ = run(capsys, "taxonomy", "show", "--store", store, "--json")
    shown = json.loads(out)
    assert "a1" in shown["classes"] and shown["partial_label_sets"]
    code, out, _ = run(capsys, "taxonomy", "history", "--store", store, "--json")
    assert json.loads(out)[-1]["author"] == "ana"
    assert run(capsys, "taxonomy", "undo", "--store", store)[0] == 0
    code, out, _ = run(capsys, "data", "stats", "--store", store, "--json")
    assert "a" in json.loads(out)["per_class"]
    code, out, _ = run(
        capsys, "data", "export", str(tmp_path / "out.json"), "--format", "coco", "--store", store
    )
    assert code == 0 and (tmp_path / "out.json").exists()


def test_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "broken.xml").write_text("<annotation>")
    code, _, err = run(
        capsys, "data", "import", str(tmp_path / "voc"), "--format", "voc", "--store", str(tmp_path / "s.qs")
    )
    assert code == 2 and err.count("\n") == 1 and "broken.xml:1:" in err
    code, _, err = run(capsys, "taxonomy", "retire", "nope", "--store", str(tmp_path / "s.qs"))
    assert code == 2 and "no current class 'nope'" in err
