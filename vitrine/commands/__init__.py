"""Subcommands of the `vitrine` CLI, one module each (see vitrine/cli.py)."""
