"""The flags of a command that calls one running service: where it is and the caller token."""

from __future__ import annotations

import argparse
import os


def add_service_flags(parser: argparse.ArgumentParser, what: str, env: str, default: str) -> None:
    """--address (default from the environment variable `env`, else `default`) and --auth-token
    (VITRINE_AUTH_TOKEN, as the services read it)."""
    parser.add_argument("--address", default=os.environ.get(env, default), help=f"{what} (env {env})")
    parser.add_argument("--auth-token", default=os.environ.get("VITRINE_AUTH_TOKEN", ""))
