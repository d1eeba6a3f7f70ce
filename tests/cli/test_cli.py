"""The `vitrine` command line: help for the command and for every subcommand."""

from __future__ import annotations

import pytest

from vitrine.cli import _commands, main

NAMES = [module.NAME for module in _commands()]  # type: ignore[attr-defined]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES)
    assert "80% Personalize" in out  # a % in a command's help is text, not a format


@pytest.mark.parametrize("name", NAMES)
def test_each_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: vitrine {name}")
