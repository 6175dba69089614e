"""The class memory: names, prototypes and thresholds as one value; add / replace / drop; plain payloads."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F

from quickstudy.detect import training
from quickstudy.detect.memory import (
    DEFAULT_OPERATING,
    UNKNOWN,
    ClassMemory,
    class_means,
    leave_one_out_cut,
    robust_mean,
    unknown_similarity,
)
from quickstudy.detect.training import unknown_operating
from quickstudy.errors import QuickstudyError


def memory_of(n: int = 3, dim: int = 8) -> ClassMemory:
    rows = F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(n)), dim=-1)
    names = [f"c{i}" for i in range(n)]
    return ClassMemory(names, rows, {name: 0.1 * (i + 1) for i, name in enumerate(names)}, unknown=0.4)


def test_adding_a_class_keeps_the_others_bit_for_bit() -> None:
    torch.manual_seed(0)
    known = F.normalize(torch.randn(40, 16), dim=-1)  # F.normalize is not idempotent in the last bit
    memory = ClassMemory([f"c{i}" for i in range(40)], known)
    new = torch.randn(16) * 3
    bigger = memory.add("new", new, threshold=0.3)
    assert torch.equal(bigger.prototypes[:40], known)
    torch.testing.assert_close(bigger.prototypes[40], F.normalize(new, dim=0))
    assert bigger.classes[-1] == "new" and bigger.operating == {"new": 0.3}
    assert len(memory) == 40 and "new" not in memory.classes  # a value: the old memory is unchanged
    with pytest.raises(ValueError, match="'c3' is already in the memory"):
        bigger.add("c3", new)


def test_replace_moves_one_row_and_keeps_its_threshold_and_drop_removes_rows_and_thresholds() -> None:
    memory = memory_of()
    replaced = memory.replace("c1", torch.tensor([0.0, 2.0, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(replaced.prototypes[1], torch.tensor([0.0, 1.0, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(replaced.prototypes[[0, 2]], memory.prototypes[[0, 2]])
    assert replaced.operating == memory.operating and replaced.classes == memory.classes
    dropped = memory.drop(["c0", "c2"])
    assert dropped.classes == ["c1"] and dropped.operating == {"c1": pytest.approx(0.2)}
    assert torch.equal(dropped.prototypes, memory.prototypes[1:2]) and dropped.unknown == 0.4
    with pytest.raises(ValueError, match="not in the memory: nope"):
        memory.drop(["nope"])
    with pytest.raises(ValueError, match="nope"):
        memory.replace("nope", torch.zeros(8))


def test_similarity_thresholds_and_the_unknown_score() -> None:
    memory = ClassMemory(["a", "b"], torch.eye(2), {"a": 0.7})
    similarity = memory.similarity(torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    torch.testing.assert_close(similarity, torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    assert memory.threshold("a") == 0.7 and memory.threshold("b") == DEFAULT_OPERATING
    assert memory.unknown_score == 0.7  # as sure as the least demanding calibrated class
    assert ClassMemory(["a"], torch.eye(1)).unknown_score == DEFAULT_OPERATING
    calibrated = memory.with_thresholds({"a": 0.2, "b": 0.3}, unknown=0.5)
    assert (calibrated.unknown_score, calibrated.unknown, memory.unknown) == (0.2, 0.5, -1.0)


def test_a_memory_refuses_what_does_not_fit_together() -> None:
    with pytest.raises(ValueError, match="2 class names for prototypes of shape"):
        ClassMemory(["a", "b"], torch.eye(3))
    with pytest.raises(ValueError, match="class names repeat: a"):
        ClassMemory(["a", "a"], torch.eye(2))
    with pytest.raises(ValueError, match="operating thresholds for classes not in the memory: z"):
        ClassMemory(["a"], torch.eye(1), {"z": 0.5})


def test_the_payload_is_plain_data_that_loads_without_unpickling_code() -> None:
    memory = memory_of()
    payload = memory.to_payload()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    loaded = ClassMemory.from_payload(torch.load(buffer, weights_only=True))
    assert loaded.classes == memory.classes and torch.equal(loaded.prototypes, memory.prototypes)
    assert loaded.operating == memory.operating and loaded.unknown == memory.unknown
    # everything but the prototypes is JSON as it is (what an exported model writes beside its network)
    plain = json.loads(json.dumps({k: v for k, v in payload.items() if k != "prototypes"}))
    assert (
        ClassMemory.from_payload({**plain, "prototypes": payload["prototypes"]}).operating == memory.operating
    )
    payload["prototypes"][0, 0] = 5.0  # the payload is a copy
    assert memory.prototypes[0, 0] != 5.0


def test_the_unknown_similarities_survive_every_edit_and_the_payload() -> None:
    both = memory_of().with_thresholds(unknown=0.5, unknown_far=0.3, unknown_operating=0.7)
    edited = both.add("new", torch.ones(8)).replace("new", torch.ones(8)).drop(["new"])
    assert (edited.unknown, edited.unknown_far, edited.unknown_score) == (0.5, 0.3, 0.7)
    assert edited.with_thresholds(unknown=0.4).unknown_far == 0.3
    loaded = ClassMemory.from_payload(both.to_payload())
    assert (loaded.unknown_far, loaded.unknown_operating) == (0.3, 0.7)
    old = both.to_payload()
    del old["thresholds"]["unknown_far"]  # a memory saved before distance alone could say unknown
    del old["thresholds"]["unknown_operating"]
    loaded = ClassMemory.from_payload(old)
    assert loaded.unknown_far == -1.0 and loaded.unknown_score == min(both.operating.values())


def test_known_unknowns_set_the_score_an_unknown_detection_needs() -> None:
    # two images hold a retired-as-unnamed box (unknown detections 0.6 and 0.7), two do not (0.3, none)
    memory = ClassMemory(["a"], torch.tensor([[1.0, 0.0]]), {"a": 0.2}, unknown=0.5)

    def output(score: float | None) -> dict[str, torch.Tensor]:
        n = 0 if score is None else 1
        return {
            "boxes": torch.tensor([[0.0, 0, 10, 10]])[:n],
            "scores": torch.full((n,), score or 0.0),
            "labels": torch.zeros(n, dtype=torch.long),
            "similarity": torch.full((n,), 0.1),
            "max_similarity": torch.full((n,), 0.1),
            "defect_scores": torch.full((n,), score or 0.0),
        }

    outputs = [output(0.6), output(0.7), output(0.3), output(None)]
    holds = torch.tensor([True, True, False, False])
    on_their_box = [torch.tensor([[0.0, 0, 10, 10]])] * 2 + [torch.zeros(0, 4)] * 2
    assert unknown_operating(memory, outputs, holds, on_their_box) == pytest.approx(0.6)
    # without known unknowns the least demanding class's 0.2 would let the 0.3 on clean surface through,
    # and 4 images allow none: it is raised just above 0.3
    alone = unknown_operating(memory, outputs, torch.zeros(4, dtype=torch.bool), on_their_box)
    assert alone == pytest.approx(0.3) and alone > 0.3
    on_every_box = [torch.tensor([[0.0, 0, 10, 10]])] * 3 + [torch.zeros(0, 4)]
    assert unknown_operating(memory, outputs, torch.zeros(4, dtype=torch.bool), on_every_box) is None


def test_unknown_detections_on_clean_surface_raise_the_score_they_need() -> None:
    # five images hold an unnamed box found as unknown at 0.6; five clean ones hold unknown detections at
    # 0.5 ... 0.8: best F1 is 0.6, which leaves three on clean surface; 10 images allow one at the rate
    # alone, none at the rate's upper bound (alarms_allowed)
    memory = ClassMemory(["a"], torch.tensor([[1.0, 0.0]]), {"a": 0.2}, unknown=0.5)
    scores = [0.6] * 5 + [0.5, 0.55, 0.7, 0.75, 0.8]
    outputs = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([score]),
            "labels": torch.zeros(1, dtype=torch.long),
            "similarity": torch.tensor([0.1]),
            "max_similarity": torch.tensor([0.1]),
            "defect_scores": torch.tensor([score]),
        }
        for score in scores
    ]
    holds = torch.tensor([True] * 5 + [False] * 5)
    truth = [torch.tensor([[1.0, 1, 10, 10]])] * 5 + [torch.tensor([[40.0, 40, 60, 60]])] * 5
    needed = unknown_operating(memory, outputs, holds, truth)
    assert 0.8 < needed <= 0.8 + 1e-6
    kept = [s for s, clean in zip(scores, [False] * 5 + [True] * 5, strict=True) if clean and s >= needed]
    assert kept == []


@pytest.mark.parametrize("images", [1, 9, 23, 24, 60, 137, 360, 1000, 5000])
def test_the_alarms_allowed_are_the_most_whose_rates_upper_bound_meets_the_budget(images: int) -> None:
    from scipy.stats import chi2

    def bound(k: int) -> float:  # the 90% upper confidence bound of a Poisson rate per image from k
        return chi2.ppf(0.9, 2 * k + 2) / 2 / images

    allowed = training.alarms_allowed(images, 0.1, 0.9)
    assert 0 <= allowed <= 0.1 * images
    assert allowed == 0 or bound(allowed) <= 0.1
    assert bound(allowed + 1) > 0.1


def test_far_alone_or_abnormal_and_far_make_unknown() -> None:
    out = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
        "scores": torch.tensor([0.9, 0.9, 0.9]),
        "labels": torch.tensor([0, 0, 0]),
        "similarity": torch.tensor([0.2, 0.45, 0.9]),
        "max_similarity": torch.tensor([0.2, 0.45, 0.9]),
        "defect_scores": torch.tensor([0.9, 0.9, 0.9]),
        "abnormality": torch.tensor([0.5, 1.5, 1.5]),  # the first region is not abnormal
    }
    memory = memory_of().with_thresholds(unknown=0.5)
    names = lambda m: [d.class_name for d in sorted(m.name_detections(out, 0.1), key=lambda d: d.box)]  # noqa: E731
    assert names(memory) == ["c0", UNKNOWN, "c0"]
    assert names(memory.with_thresholds(unknown_far=0.3)) == [UNKNOWN, UNKNOWN, "c0"]


def test_a_class_with_its_own_cut_is_named_where_the_common_cut_would_say_unknown() -> None:
    memory = memory_of().with_thresholds(unknown=0.5).add("new", torch.eye(8)[0], 0.1, unknown_cut=0.3)
    new = memory.index("new")
    # rows labelled "new": between its cut and the common one, below its cut; a known class's row
    similarity = torch.full((3, 4), -1.0)
    similarity[0, new], similarity[1, new], similarity[2, 0] = 0.4, 0.2, 0.4
    out = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
        "scores": torch.tensor([0.9, 0.9, 0.9]),
        "labels": torch.tensor([new, new, 0]),
        "similarity": similarity.amax(-1),
        "max_similarity": memory.nearest(similarity),
        "defect_scores": torch.tensor([0.9, 0.9, 0.9]),
    }
    found = sorted(memory.name_detections(out, 0.1), key=lambda d: d.box)
    assert [d.class_name for d in found] == ["new", UNKNOWN, UNKNOWN]
    # without a cut of its own the class is held to the common one, as every class was
    plain = memory.replace("new", torch.eye(8)[0])
    assert plain.unknown_by_class == {} and torch.equal(plain.nearest(similarity), similarity.amax(-1))
    # the cut goes where the class goes: edits, the payload, and a payload older than cuts of one's own
    assert memory.with_thresholds(unknown=0.45).unknown_by_class == {"new": 0.3}
    # a common cut calibrated below a class's own leaves that class no stricter than the others
    lowered = memory.with_thresholds(unknown=0.2)
    assert torch.equal(lowered.nearest(similarity), similarity.amax(-1))
    assert memory.drop(["new"]).unknown_by_class == {}
    assert ClassMemory.from_payload(memory.to_payload()).unknown_by_class == {"new": 0.3}
    old = memory.drop(["new"]).to_payload()
    del old["thresholds"]["unknown_by_class"]
    assert ClassMemory.from_payload(old).unknown_by_class == {}


def test_the_leave_one_out_cut_is_how_far_each_support_box_lies_from_the_others() -> None:
    spread = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.3], [1.0, -0.3], [0.0, 1.0]]), dim=-1)
    # the last box, left out, is farthest from the mean of the others
    expected = float(spread[3] @ robust_mean(spread[:3]))
    assert leave_one_out_cut(spread) == pytest.approx(expected)
    assert leave_one_out_cut(spread[:1]) is None  # one box: nothing to leave out


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"classes": "c0"}, "the class names are not a list of strings"),
        ({"classes": ["c0", 1, "c2"]}, "the class names are not a list of strings"),
        ({"prototypes": [[1.0]]}, "the prototypes are not a float tensor"),
        ({"prototypes": torch.zeros(2, 8)}, "3 class names for prototypes of shape (2, 8)"),
        ({"thresholds": None}, "the thresholds are not a mapping"),
        (
            {"thresholds": {"unknown": 0.1, "operating": {"c0": "high"}}},
            "the operating thresholds are not a mapping of class names to numbers",
        ),
        ({"thresholds": {"unknown": True, "operating": {}}}, "the unknown similarity True is not a number"),
        (
            {"thresholds": {"unknown": 0.1, "operating": {"x": 0.2}}},
            "operating thresholds for classes not in the memory: x",
        ),
        (
            {"thresholds": {"unknown": 0.1, "unknown_far": "far", "operating": {}}},
            "the unknown_far similarity 'far' is not a number",
        ),
        (
            {"thresholds": {"unknown": 0.1, "unknown_operating": "high", "operating": {}}},
            "the unknown operating threshold 'high' is not a number",
        ),
        (
            {"thresholds": {"unknown": 0.1, "unknown_by_class": {"c0": None}, "operating": {}}},
            "the per-class unknown cuts are not a mapping of class names to numbers",
        ),
        (
            {"thresholds": {"unknown": 0.1, "unknown_by_class": {"x": 0.2}, "operating": {}}},
            "unknown cuts for classes not in the memory: x",
        ),
    ],
)
def test_a_broken_payload_is_one_line_naming_where_it_came_from(change: dict, problem: str) -> None:
    payload = {**memory_of().to_payload(), **change}
    with pytest.raises(QuickstudyError) as refused:
        ClassMemory.from_payload(payload, "runs/m/versions/v2.pt")
    assert str(refused.value) == f"runs/m/versions/v2.pt: {problem}"
    assert "\n" not in str(refused.value)


def test_class_means_robust_means_and_the_unknown_similarity() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    allowed = torch.tensor([[True, False, False], [True, False, False], [False, True, True]])
    fallback = torch.tensor([[0.0, 9.0], [0.0, 9.0], [3.0, 4.0]])
    means = class_means(embeddings, allowed, fallback)
    # class 0: its two single-label boxes; classes 1 and 2: only a two-class box, so the fallback
    torch.testing.assert_close(
        means, torch.tensor([[0.7071, 0.7071], [0.0, 1.0], [0.6, 0.8]]), atol=1e-4, rtol=0
    )
    odd = torch.cat([torch.tensor([[1.0, 0.0]]).expand(4, 2), torch.tensor([[-1.0, 0.2]])])
    torch.testing.assert_close(robust_mean(odd), torch.tensor([1.0, 0.0]))  # the odd box is left out
    torch.testing.assert_close(robust_mean(odd[3:]), F.normalize(odd[3:].mean(0), dim=0))  # under 5: all
    assert unknown_similarity(torch.linspace(0.0, 1.0, 101)) == pytest.approx(0.05)
    assert unknown_similarity(torch.zeros(0)) == -1.0
