"""Taxonomy semantics (DESIGN.md "Label semantics") and the invariant that no operation loses a box."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickstudy.errors import QuickstudyError
from quickstudy.labels import Store

from .labels_fixtures import small_store, snapshot


def allowed_sets(store: Store) -> list[frozenset[str]]:
    return [box.allowed for sample in store.samples() for box in sample.boxes]


def test_split_resolves_old_labels_to_all_parts_until_relabelled(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    store.taxonomy.split("a", ["a1", "a2"])
    assert store.classes() == ["b", "c", "a1", "a2"]
    assert frozenset({"a1", "a2"}) in allowed_sets(store)
    assert frozenset({"a"}) not in allowed_sets(store)
    box = next(b for s in store.samples() for b in s.boxes if b.allowed == {"a1", "a2"})
    store.set_label(box.box_id, "a2")
    relabelled = next(b for s in store.samples() for b in s.boxes if b.box_id == box.box_id)
    assert relabelled.allowed == {"a2"}
    store.undo()  # the relabel
    store.undo()  # the split
    assert snapshot(store) == before


def test_merge_retire_rename(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    n_boxes = len(store.boxes())
    store.taxonomy.merge(["a", "b"], "ab")
    assert store.classes() == ["c", "ab"]
    assert set(allowed_sets(store)) == {frozenset({"ab"}), frozenset({"c"}), frozenset()}
    store.taxonomy.rename("ab", "line")
    store.taxonomy.retire("c")
    assert set(allowed_sets(store)) == {frozenset({"line"}), frozenset()}
    assert len(store.boxes()) == n_boxes
    assert store.taxonomy_version() == 3 + 3  # three classes added at import, then three edits


def test_merge_may_reuse_a_source_name_and_split_may_keep_it(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    store.taxonomy.merge(["a", "b"], "a")
    store.taxonomy.split("a", ["a", "b2"])
    assert sorted(store.classes()) == ["a", "b2", "c"]
    assert frozenset({"a", "b2"}) in allowed_sets(store)


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda t: t.split("nope", ["x", "y"]), "no current class 'nope'"),
        (lambda t: t.split("a", ["x"]), "two or more"),
        (lambda t: t.split("a", ["b", "x"]), "'b' already exists"),
        (lambda t: t.merge(["a"], "x"), "two or more"),
        (lambda t: t.add("a|b"), "invalid class name"),
        (lambda t: t.rename("a", "c"), "'c' already exists"),
    ],
)
def test_invalid_operations_change_nothing(tmp_path: Path, operation, message: str) -> None:
    store = small_store(tmp_path)
    before = snapshot(store)
    with pytest.raises(QuickstudyError, match=message):
        operation(store.taxonomy)
    assert snapshot(store) == before


def test_undo_refuses_to_remove_a_class_that_labels_use(tmp_path: Path) -> None:
    store = small_store(tmp_path)  # the import added classes a, b, c, and boxes are labelled with them
    before = snapshot(store)
    with pytest.raises(QuickstudyError, match=r"box label\(s\) use class 'c'"):
        store.undo()
    assert snapshot(store) == before


def test_imports_are_not_undone(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.qs")
    store.journal("import", {"source": "x"})
    with pytest.raises(QuickstudyError, match="imports are not undone"):
        store.undo()


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "rename", "merge", "split", "retire", "undo", "relabel"]),
        st.integers(0, 50),
        st.integers(0, 50),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_no_operation_sequence_loses_a_box_and_resolve_stays_current(tmp_path_factory, operations) -> None:
    store = small_store(tmp_path_factory.mktemp("prop"))
    geometry = {b.box_id: (b.image_id, b.xyxy) for b in store.boxes()}
    fresh = iter(range(1000))
    for kind, i, j in operations:
        classes = store.classes()
        try:
            if kind == "add":
                store.taxonomy.add(f"n{next(fresh)}")
            elif kind == "rename" and classes:
                store.taxonomy.rename(classes[i % len(classes)], f"r{next(fresh)}")
            elif kind == "merge" and len(classes) >= 2:
                a, b = classes[i % len(classes)], classes[j % len(classes)]
                if a != b:
                    store.taxonomy.merge([a, b], f"m{next(fresh)}")
            elif kind == "split" and classes:
                store.taxonomy.split(classes[i % len(classes)], [f"s{next(fresh)}", f"s{next(fresh)}"])
            elif kind == "retire" and classes:
                store.taxonomy.retire(classes[i % len(classes)])
            elif kind == "relabel" and classes:
                box_ids = sorted(geometry)
                store.set_label(box_ids[i % len(box_ids)], classes[j % len(classes)])
            elif kind == "undo":
                store.undo()
        except QuickstudyError:
            pass  # a refused operation is fine; it must just not lose anything (checked below)
        assert {b.box_id: (b.image_id, b.xyxy) for b in store.boxes()} == geometry
        current = set(store.classes())
        for allowed in allowed_sets(store):
            assert allowed <= current
    store.close()


def test_labels_import_no_torch() -> None:
    code = "import sys, quickstudy.labels, quickstudy.labels.formats, quickstudy.labels.known; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
