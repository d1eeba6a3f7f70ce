"""The `vitrine` command. Each subcommand is a module in vitrine/commands/ exposing
NAME, HELP, add_arguments(parser) and run(args) -> int; they are found at start-up,
so adding a command touches no shared file."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

import vitrine.commands


def _commands() -> list[ModuleType]:
    modules: list[ModuleType] = []
    for info in sorted(pkgutil.iter_modules(vitrine.commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"vitrine.commands.{info.name}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrine", description="Vitrine real-time personalization engine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        text: str = module.HELP
        # argparse %-formats help strings ("80% Personalize" would break `vitrine --help`).
        command = sub.add_parser(module.NAME, help=text.replace("%", "%%"), description=text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
