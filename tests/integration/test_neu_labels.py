"""The label model on the real NEU-DET: counts, P1 split, taxonomy edits that keep all 4189 boxes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from quickstudy.cli import main
from quickstudy.labels import Store
from quickstudy.labels.known import NEU_CLASSES, import_neu_det, neu_class_of


@pytest.fixture(scope="module")
def neu_store(neu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("neu") / "neu.qs"
    with Store.open(path) as store:
        import_neu_det(store, neu_root)
    return path


def test_neu_det_imports_whole(neu_store: Path) -> None:
    with Store.open(neu_store) as store:
        stats = store.stats()
        assert stats["images"] == 1800 and stats["boxes"] == 4189
        assert store.classes() == list(NEU_CLASSES)
        assert Counter(neu_class_of(image.path) for image in store.images()) == {c: 300 for c in NEU_CLASSES}
        assert stats["splits"]["train"]["images"] == 1440 and stats["splits"]["test"]["images"] == 360
        assert sum(stats["per_class"].values()) == 4189


def test_split_then_undo_restores_exactly_and_merge_split_retire_keep_boxes(
    neu_store: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "neu.qs"
    with Store.open(neu_store) as original, Store.open(copy) as store:
        original._conn.backup(store._conn)
    with Store.open(copy) as store:
        before = (store.classes(), store.taxonomy_version(), store.samples())
        store.taxonomy.split("inclusion", ["inclusion_small", "inclusion_large"])
        assert store.stats()["partial_label_sets"] == {"inclusion_large | inclusion_small": 1011}
        store.undo()
        assert (store.classes(), store.taxonomy_version(), store.samples()) == before
        store.taxonomy.merge(["inclusion", "scratches"], "line")
        store.taxonomy.split("line", ["inclusion", "scratches"])
        store.taxonomy.retire("crazing")
        stats = store.stats()
        assert stats["boxes"] == 4189
        assert stats["boxes_of_retired_classes"] == 689
        assert stats["partial_label_sets"] == {"inclusion | scratches": 1011 + 548}


def test_cli_stats_json_and_errors(
    neu_store: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["data", "stats", "--store", str(neu_store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["boxes"] == 4189
    broken = tmp_path / "broken.qs"
    broken.write_bytes(b"garbage" * 10)
    assert main(["data", "stats", "--store", str(broken)]) == 2
    assert "broken.qs: not a quickstudy label store" in capsys.readouterr().err
