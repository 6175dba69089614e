"""A model compares class identities with the store it was made from, and names with any other."""

from __future__ import annotations

from pathlib import Path

import pytest

from quickstudy.detect.versions import check_taxonomy, store_fingerprint
from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store


def _store(path: Path, classes: list[str]) -> Store:
    store = Store.open(path)
    for name in classes:
        store.taxonomy.add(name)
    return store


def _model(store: Store) -> dict:
    return {
        "classes": store.classes(),
        "taxonomy_version": store.taxonomy_version(),
        **store_fingerprint(store),
    }


def test_two_names_swapped_by_three_renames_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path / "a.qs", ["crazing", "inclusion"])
    model = _model(store)
    assert check_taxonomy(model, store, "m") is None
    store.taxonomy.rename("crazing", "tmp")
    store.taxonomy.rename("inclusion", "crazing")
    store.taxonomy.rename("tmp", "inclusion")
    assert sorted(store.classes()) == ["crazing", "inclusion"]  # a name-only check sees nothing
    with pytest.raises(QuickstudyError, match=r"'crazing' \(renamed to 'inclusion'\)"):
        check_taxonomy(model, store, "m")


def test_a_split_class_is_refused_and_a_new_class_is_fine(tmp_path: Path) -> None:
    store = _store(tmp_path / "a.qs", ["scratch", "pit"])
    model = _model(store)
    store.taxonomy.add("dent")
    assert check_taxonomy(model, store, "m") is None
    store.taxonomy.split("pit", ["pit_deep", "pit_shallow"])
    with pytest.raises(QuickstudyError, match=r"'pit' \(now pit_deep, pit_shallow\).*quickstudy learn"):
        check_taxonomy(model, store, "m")


def test_another_store_is_matched_by_name_and_says_so(tmp_path: Path) -> None:
    model = _model(_store(tmp_path / "a.qs", ["scratch", "pit"]))
    copy = _store(tmp_path / "b.qs", ["pit", "scratch"])  # a re-import: other ids, other identity
    note = check_taxonomy(model, copy, "m")
    assert note is not None and "matched by name only" in note
    copy.taxonomy.retire("pit")
    with pytest.raises(QuickstudyError, match=r"'pit'"):
        check_taxonomy(model, copy, "m")
