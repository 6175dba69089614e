"""A miniature `quickstudy demo`: every step runs, prints its numbers, and the report holds each section."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from quickstudy.demo import DemoSettings, run_demo
from quickstudy.errors import QuickstudyError
from quickstudy.evaluate.report import SECTIONS
from quickstudy.labels.store import Store


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(out=out, train_images=50, test_images=15, image_size=64, epochs=1, batch_size=8)
    printed = io.StringIO()
    result = run_demo(settings, Console(file=printed, width=120))
    return out, result.report, printed.getvalue()


def test_every_step_prints_and_the_last_line_is_the_report(miniature) -> None:
    out, path, printed = miniature
    for number in range(1, 6):
        assert f"Step {number}/5" in printed
    assert "reported unknown" in printed and "mAP50" in printed
    assert printed.strip().splitlines()[-1] == str(path)
    assert path == out / "report.html"


def test_report_holds_each_section_with_the_learned_types(miniature) -> None:
    _, path, _ = miniature
    text = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section.key}">' in text
    for name in ("crack", "scratch", "inclusion", "pit", "stain"):
        assert re.search(rf"<td>{name}</td>", text), name
    assert "scratch + inclusion → line" in text and "line → scratch, inclusion" in text


def test_store_keeps_every_box_through_merge_and_split(miniature) -> None:
    out, _, _ = miniature
    with Store.open(out / "labels.qs", create=False) as store:
        stats = store.stats()
        kinds = [edit["kind"] for edit in store.taxonomy.history()]
    assert kinds.count("merge") == kinds.count("split") == 1
    assert kinds.index("merge") < kinds.index("split")
    assert stats["boxes_without_class"] > 0
    assert "inclusion | scratch" in stats["partial_label_sets"]


def test_a_folder_that_is_not_a_previous_demo_run_is_left_alone(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QuickstudyError, match="not a previous demo run"):
        run_demo(DemoSettings(out=tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_same_story_runs_on_neu_det(neu_root, tmp_path) -> None:
    """``--data``: P1's split, P3's new types, ``scale`` merged from crazing and rolled-in_scale, then split."""
    settings = DemoSettings(
        out=tmp_path / "neu", data=neu_root, limit=90, image_size=64, epochs=1, batch_size=8
    )
    printed = io.StringIO()
    text = run_demo(settings, Console(file=printed, width=120)).report.read_text(encoding="utf-8")
    assert "held back: pitted_surface, scratches" in printed.getvalue()
    assert "crazing + rolled-in_scale → scale" in text and "scale → crazing, rolled-in_scale" in text
    for name in ("pitted_surface", "scratches", "crazing", "rolled-in_scale", "inclusion", "patches"):
        assert f"<td>{name}</td>" in text, name
