"""The command table: every command is registered by its module, and light commands stay light."""

from __future__ import annotations

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
