"""The command table: every command is registered by its module, and light commands stay light."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from quickstudy.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_registered_by_its_module_with_help(command: str, capsys) -> None:
    parser = build_parser(command)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: quickstudy" in capsys.readouterr().out


def test_overview_lists_every_command(capsys) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_label_commands_do_not_import_torch() -> None:
    code = (
        "import sys; from quickstudy.cli import build_parser; "
        "build_parser('data'); build_parser('taxonomy'); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_train_help_states_the_library_defaults() -> None:
    """`train` leaves unset options to train_detector; its help must name the same defaults."""
    from quickstudy.detect.data import AUGMENTATIONS, DEFAULT_AUGMENT, DEFAULT_PHOTOMETRIC
    from quickstudy.detect.model import DetectorConfig
    from quickstudy.detect.training import DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_WEIGHTING

    parser = build_parser("train")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    helps = {action.dest: action.help or "" for action in train._actions}

    def stated(dest: str) -> str:
        found = re.search(r"\(default: ([^;)]+)", helps[dest])
        assert found, helps[dest]
        return found.group(1)

    assert int(stated("batch_size")) == DEFAULT_BATCH_SIZE
    assert float(stated("lr")) == DEFAULT_LR
    assert stated("weighting") == DEFAULT_WEIGHTING
    assert stated("augment") == DEFAULT_AUGMENT
    assert stated("photometric") == ("on" if DEFAULT_PHOTOMETRIC else "off")
    assert float(stated("pseudo_labels")) == DetectorConfig().pseudo_label_confidence
    # the CLI spells the choices out (importing torch for them would slow every command)
    assert tuple(next(a for a in train._actions if a.dest == "augment").choices) == AUGMENTATIONS
    args = parser.parse_args(["train", "--store", "s.db", "--out", "o"])
    assert args.batch_size is None and args.lr is None and args.weighting is None and args.augment is None
    assert args.photometric is None and args.pseudo_labels is None
    assert (
        parser.parse_args(["train", "--store", "s", "--out", "o", "--pseudo-labels", "off"]).pseudo_labels
        == "off"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--store", "s", "--out", "o", "--pseudo-labels", "1.5"])


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser, by its command line ("fewshot eval")."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found |= _subparsers(sub, f"{prefix}{name} ")
    return found


def _every_command() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for command in COMMANDS:
        found |= _subparsers(build_parser(command))
    return found


def test_device_amp_and_model_are_spelled_one_way_everywhere() -> None:
    from quickstudy.cli._common import device

    options = {
        line: {option: action for action in sub._actions for option in action.option_strings}
        for line, sub in _every_command().items()
    }
    with_device = sorted(line for line, found in options.items() if "--device" in found)
    assert len(with_device) >= 9, (
        with_device
    )  # train predict eval learn demo pretrain, fewshot x2, multitask x2
    for line in with_device:
        assert options[line]["--device"].default == "auto" and options[line]["--device"].type is device, line
    amp_helps = {line: found["--amp"].help for line, found in options.items() if "--amp" in found}
    assert set(amp_helps) >= {"train", "pretrain", "fewshot train", "multitask train"}
    for line, text in amp_helps.items():
        assert text is not None and text.startswith(
            "bfloat16 autocast on CUDA; no effect on the CPU (default: "
        ), line
        assert isinstance(options[line]["--amp"], argparse.BooleanOptionalAction), line
    assert options["train"]["--amp"].default is True and options["fewshot train"]["--amp"].default is False
    for line in ("eval", "predict", "learn", "fewshot eval", "multitask eval"):
        assert options[line]["--model"].metavar in ("DIR", None), line
    assert "--checkpoint" in options["fewshot eval"]  # kept one release, hidden
    assert options["fewshot eval"]["--checkpoint"].help == argparse.SUPPRESS
