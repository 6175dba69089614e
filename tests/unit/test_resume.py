"""A run folder is resumed only by the run that wrote it: check_resumable names what differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from quickstudy.errors import QuickstudyError
from quickstudy.train.resume import check_resumable

FILE = Path("runs") / "a" / "checkpoint.pt"


def test_the_same_options_resume_and_options_that_may_change_are_not_compared() -> None:
    saved = {"lr": 0.001, "steps": 10, "net": {"widths": (8, 16)}, "init": None}
    check_resumable(FILE, saved, dict(saved))
    check_resumable(FILE, saved, {**saved, "steps": 20}, may_change=("steps",))
    # a checkpoint may give a tuple back as a list
    check_resumable(FILE, saved, {**saved, "net": {"widths": [8, 16]}})


def test_other_options_are_refused_in_one_line_naming_the_folder_and_each_option() -> None:
    saved = {"lr": 0.001, "steps": 10, "net": {"widths": (8, 16), "depth": 2}}
    wanted = {"lr": 0.002, "steps": 20, "net": {"widths": (8, 32), "depth": 2}}
    with pytest.raises(QuickstudyError) as refused:
        check_resumable(FILE, saved, wanted, may_change=("steps",))
    message = str(refused.value)
    folder = FILE.parent
    assert message == (
        f"{folder}: holds a run with another lr, net.widths: lr=0.001, not 0.002; "
        f"net.widths=[8, 16], not [8, 32]; use another --out, or delete {folder} to start over"
    )
    assert "\n" not in message


def test_an_option_only_one_run_has_differs_and_long_values_are_cut() -> None:
    with pytest.raises(QuickstudyError, match=r"another seed: seed=unset, not 3;"):
        check_resumable(FILE, {"lr": 0.1}, {"lr": 0.1, "seed": 3})
    with pytest.raises(QuickstudyError, match=r"another seed: seed=3, not unset;"):
        check_resumable(FILE, {"lr": 0.1, "seed": 3}, {"lr": 0.1})
    with pytest.raises(QuickstudyError) as refused:
        check_resumable(FILE, {"classes": ["a"] * 100}, {"classes": ["b"] * 100})
    assert "classes=['a', 'a', " in str(refused.value) and len(str(refused.value)) < 300
