"""`vitrine serve SERVICE [flags]`: run one service in the foreground (same as python -m services.SERVICE)."""

from __future__ import annotations

import argparse
import importlib

NAME = "serve"
HELP = "run one service (profile, segmentation, recommendation, journeys, gateway, console) until SIGTERM"
SERVICES = ("profile", "segmentation", "recommendation", "journeys", "gateway", "console")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="the service's own flags (see --help after it)")


def run(args: argparse.Namespace) -> int:
    app = importlib.import_module(f"services.{args.service}.app")
    app.main(args.flags)
    return 0
