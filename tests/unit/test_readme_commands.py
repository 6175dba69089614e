"""Every `quickstudy` command line in README.md's code blocks parses with the real parser and passes the
command's own option checks; a run that a later line evaluates was made by an earlier line, and the
evaluation reads the data that run was trained on without being told again.

Placeholders are filled in (``A,B,...``, ``N``, ``IMAGE...``), ``a|b|c`` gives one line per choice,
``[--option value]`` gives the line without and with it, and ``quickstudy learn ... --adapt`` repeats
the previous ``learn`` line's options. Nothing is run: no data is read, no file is written.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

from quickstudy.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDERS = {"A,B,...": "crazing,patches", "N": "10", "IMAGE...": "a.jpg b.jpg", "...": ""}


def command_lines(text: str) -> list[str]:
    """The `quickstudy ...` lines of the code blocks, continuation lines joined, comments dropped."""
    lines, inside, pending = [], False, ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words[:1] == ["quickstudy"]:
            lines.append(shlex.join(words))
    return lines


def variants(line: str, previous: dict[str, list[str]]) -> list[list[str]]:
    """The argument vectors ``line`` stands for (see the module docstring); ``previous`` maps a
    command to the words of its last full line, for ``quickstudy learn ...`` (and is updated)."""
    words = shlex.split(line)[1:]
    if words[1:2] == ["..."]:
        words = previous[words[0]] + words[2:]
    else:
        previous[words[0]] = words
    plain: list[str] = []
    optional: list[str] = []
    group: list[str] | None = None
    for word in words:
        if word.startswith("["):
            group, word = [], word[1:]
        closing = word.endswith("]")
        word = word.removesuffix("]")
        filled = PLACEHOLDERS.get(word, word).split()
        if group is None:
            plain.extend(filled)
        else:
            group.extend(filled)
            if closing:
                optional.extend(group)
                group = None
    choices = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in plain]
    return [[*choice, *extra] for choice in itertools.product(*choices) for extra in ([], optional) if choice]


def parse(argv: list[str]) -> argparse.Namespace:
    command = next(word for word in argv if not word.startswith("-"))
    try:
        return build_parser(command).parse_args(argv)
    except SystemExit:
        pytest.fail(f"quickstudy {shlex.join(argv)}: the parser refuses it (usage printed above)")


LINES = command_lines(README.read_text())


def test_the_readme_has_command_lines_of_every_kind() -> None:
    commands = {shlex.split(line)[1] for line in LINES}
    assert commands >= {"data", "taxonomy", "train", "predict", "eval", "learn", "models"}
    assert commands >= {"fewshot", "multitask", "pretrain", "demo"}
    assert len(LINES) >= 24


@pytest.mark.parametrize("index", range(len(LINES)), ids=LINES)
def test_readme_line_parses_checks_and_reads_what_earlier_lines_made(index: int) -> None:
    from quickstudy.cli import fewshot, multitask

    previous: dict[str, list[str]] = {}
    made: dict[str, argparse.Namespace] = {}  # --out DIR -> the arguments of the line that made it
    for line in LINES[:index]:
        for argv in variants(line, previous):
            args = parse(argv)
            if getattr(args, "out", None):
                made[str(args.out)] = args
    for argv in variants(LINES[index], previous):
        args = parse(argv)
        if getattr(args, "check", None):
            args.check(args)
        for name in ("model", "baseline", "init"):
            folder = getattr(args, name, None)
            if folder is not None and re.match(r"runs/", str(folder)):
                assert str(folder) in made, f"{LINES[index]}: no earlier line makes {folder}"
        if args.func is multitask._train:
            multitask.run_config(args).check()  # the run this line makes is one that trains
        if args.func is fewshot._eval:
            trainer = made[args.model]
            remembered = fewshot.trained_on(trainer) if trainer.func is fewshot._train else {}
            dataset, root = fewshot.eval_data(args, remembered)
            if remembered:  # the run's data, found without --data-root
                assert (dataset, str(root.resolve())) == (remembered["dataset"], remembered["data_root"])
        if args.func is multitask._eval:
            config = multitask.run_config(made[args.model])
            assert multitask.eval_data_root(args, config).resolve() == Path(config.data_root)
