"""`quickstudy eval --json --report`: the HTML report holds the very numbers the JSON prints."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path

import pytest

from quickstudy.cli import main
from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect.model import TINY, DetectorConfig
from quickstudy.detect.training import train_detector
from quickstudy.evaluate.report import PER_CLASS_COLUMNS
from quickstudy.labels.formats.voc import read_voc
from quickstudy.labels.store import Store


@pytest.fixture(scope="module")
def model_and_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny detector trained for two epochs on 24 synthetic images: numbers of any quality will do."""
    folder = tmp_path_factory.mktemp("eval")
    line = SyntheticLine(seed=0, size=64, defect_types=("dent", "pit", "stain"), max_per_image=2)
    line.write_voc(folder / "voc", 24)
    images = read_voc(folder / "voc")
    for index, image in enumerate(images):
        image.split = "test" if index % 3 == 0 else "train"
    store_path = folder / "labels.qs"
    with Store.open(store_path) as store:
        store.import_images(images, source="synthetic")
        config = DetectorConfig(**TINY, image_size=64)
        train_detector(store, folder / "model", epochs=2, batch_size=8, config=config)
    return folder / "model", store_path


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_report_renders_the_json_numbers(model_and_store, tmp_path, capsys) -> None:
    model, store = model_and_store
    page = tmp_path / "eval.html"
    command = ["eval", "--model", str(model), "--store", str(store), "--json", "--report", str(page)]
    assert main([*command, "--target-precision", "0.9"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("report") == str(page)
    text = page.read_text(encoding="utf-8")

    embedded = re.search(r'<script type="application/json" id="metrics">(.*?)</script>', text, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == printed

    def shown(value: object) -> str:
        if value is None:
            return "—"
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"

    cards = {
        html.unescape(label): value
        for value, label in re.findall(r"<div class=value>(.*?)</div><div class=label>(.*?)</div>", text)
    }
    for key in ("mAP", "mAP50", "AR100_agnostic", "AP50_agnostic", "n_images"):
        assert cards[key] == shown(printed[key]), key
    per_class = text.split('<section id="per-class">', 1)[1].split("</table>", 1)[0]
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", per_class)
        )
        if cells
    }
    assert set(rows) == {*printed["AP50"], "mean"} == {"dent", "pit", "stain", "mean"}
    for name in printed["AP50"]:
        assert rows[name] == [shown(printed[key][name]) for key in PER_CLASS_COLUMNS], name
    assert rows["mean"][2:4] == [shown(printed["mAP50"]), shown(printed["mAP"])]
    assert "Image-score thresholds for precision ≥ 0.900" in text


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_counts_how_a_type_the_model_lacks_is_named(model_and_store, tmp_path, capsys) -> None:
    model, original = model_and_store
    store = tmp_path / "renamed.qs"
    with sqlite3.connect(original) as source, sqlite3.connect(store) as copy:
        source.backup(copy)
    with Store.open(store) as opened:
        opened.taxonomy.add("smudge")  # a type the model was never taught: some TEST dents become it
        dents = [b for s in opened.samples("test") for b in s.boxes if b.allowed == {"dent"}]
        for relabelled in dents[::2]:
            opened.set_label(relabelled.box_id, "smudge")
    stains = len(dents[::2])
    assert stains > 0
    assert main(["eval", "--model", str(model), "--store", str(store), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    naming = printed["naming"]
    assert set(naming) == {"dent", "smudge"}  # this fixture's TEST images hold dents only
    assert naming["smudge"]["known"] is False and naming["smudge"]["boxes"] == stains
    assert naming["smudge"]["named_right"] == 0.0
    for name, row in naming.items():
        shares = [row[k] for k in ("named_right", "unknown", "named_other", "missed")]
        assert sum(shares) == pytest.approx(1.0), name
    assert naming["dent"]["known"] is True and naming["dent"]["boxes"] == len(dents) - stains
    assert printed["called_unknown"] == {
        "known_types": naming["dent"]["unknown"],
        "new_types": naming["smudge"]["unknown"],
    }
    assert main(["eval", "--model", str(model), "--store", str(store)]) == 0
    assert "smudge (new)" in capsys.readouterr().out
