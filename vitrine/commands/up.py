"""`vitrine up`: start the whole suite on localhost, load the demo store into an empty
data directory, and stay in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from vitrine.supervisor import (
    DEFAULT_PORTS,
    SHARED_SERVICES,
    Suite,
    SuiteLayout,
    is_empty_data_dir,
    status_table,
    tail,
)

# How often the supervisor looks for crashed children and restarts due ones.
POLL_SECONDS = 0.5

NAME = "up"
HELP = "start all services on localhost (demo store loaded into an empty data dir) until Ctrl-C"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=os.environ.get("VITRINE_DATA_DIR", "./data"),
                        help="where every service keeps its files (env VITRINE_DATA_DIR; default ./data)")
    parser.add_argument("--no-demo", action="store_true", help="start empty: do not load the demo store")
    parser.add_argument("--profile-shards", type=int, default=_env_int("VITRINE_PROFILE_SHARDS", 0),
                        help="number of profile shards (processes), routed by the gateway (default 1; 2 with "
                             "--event-log)")
    for name, port in DEFAULT_PORTS.items():
        env = f"VITRINE_{name.upper()}_PORT"
        parser.add_argument(f"--{name}-port", type=int, default=_env_int(env, port),
                            help=f"{name} port (env {env}; default {port})")
    parser.add_argument("--auth-token", default=os.environ.get("VITRINE_AUTH_TOKEN", ""),
                        help="shared bearer token for every service (env VITRINE_AUTH_TOKEN)")
    parser.add_argument("--metrics-base-port", type=int, default=_env_int("VITRINE_METRICS_BASE_PORT", -1),
                        help="serve /metrics on consecutive ports from here (default off)")
    parser.add_argument("--demo-shoppers", type=int, default=None, help="demo store size (default: the preset)")
    parser.add_argument("--demo-products", type=int, default=None, help="demo store size (default: the preset)")
    parser.add_argument("--event-log", default=os.environ.get("VITRINE_EVENT_LOG", ""),
                        help="nats://host:port[,..] of a running nats-server with JetStream: scale-out mode, the "
                             "event log in JetStream, profile shards as state stores (env VITRINE_EVENT_LOG; "
                             "implies --profile-shards 2 unless given, and separate processes; no demo store)")
    parser.add_argument("--event-log-partitions", type=int, default=_env_int("VITRINE_EVENT_LOG_PARTITIONS", 16),
                        help="scale-out: partitions of the event stream (env VITRINE_EVENT_LOG_PARTITIONS; "
                             "fixed for the stream's life; default 16)")
    parser.add_argument("--separate-processes", action="store_true",
                        default=os.environ.get("VITRINE_SEPARATE_PROCESSES", "") not in ("", "0"),
                        help="one process per service (env VITRINE_SEPARATE_PROCESSES); default: profile, "
                             "segmentation, recommendation and the gateway share one process, each on its own "
                             "port, the gateway calling them in-process (benchmarks/README.md, issue #16); "
                             "implied by --profile-shards > 1")


def _load_demo(layout: SuiteLayout, args: argparse.Namespace) -> None:
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    overrides = {}
    if args.demo_products:
        overrides["n_products"] = args.demo_products
    if args.demo_shoppers:
        overrides["n_shoppers"] = args.demo_shoppers
    config = DemoConfig(**overrides)
    started = time.monotonic()
    if "journeys" in layout.ports:  # journeys and consent first: the demo's events then produce messages
        from vitrine.demo.journeys import consent_subscribers, put_demo_journeys
        asyncio.run(put_demo_journeys(layout.address("journeys"), layout.auth_token))
        asyncio.run(consent_subscribers(config, layout.profile_addresses(), layout.auth_token))
    report = asyncio.run(load_demo(
        config,
        profile_addresses=layout.profile_addresses(),
        gateway_address=layout.address("gateway"),
        segmentation_address=layout.address("segmentation"),
        recommendation_address=layout.address("recommendation"),
        auth_token=layout.auth_token,
    ))
    print(f"demo store loaded in {time.monotonic() - started:.1f}s: {report}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if not args.profile_shards:
        args.profile_shards = 2 if args.event_log else 1
    if args.profile_shards < 1:
        print("--profile-shards must be at least 1", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).resolve()
    # The demo loader writes profiles directly (ImportProfile, SetConsent), which scale-out mode refuses.
    load = not args.no_demo and not args.event_log and is_empty_data_dir(data_dir)
    if args.event_log and not args.no_demo:
        print("scale-out mode (--event-log): the demo store is not loaded; send events through the gateway",
              file=sys.stderr)
    layout = SuiteLayout(
        data_dir=data_dir,
        ports={name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS},
        profile_shards=args.profile_shards,
        auth_token=args.auth_token,
        metrics_base_port=args.metrics_base_port,
        event_log=args.event_log,
        event_log_partitions=args.event_log_partitions,
    )
    shared = not args.separate_processes and args.profile_shards == 1 and not args.event_log
    suite = Suite(layout, services=SHARED_SERVICES if shared else None)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    print(f"starting Vitrine (data in {data_dir}, logs in {data_dir / 'logs'}) ...", file=sys.stderr)
    try:
        suite.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        for child in suite.children:
            print(f"--- {child.name} ({child.log_path})\n{tail(child.log_path)}", file=sys.stderr)
        return 1
    print(status_table(suite.children), file=sys.stderr)
    try:
        if load and not stop.is_set():
            print("empty data directory: loading the demo store ...", file=sys.stderr)
            _load_demo(layout, args)
        print(f"Vitrine is up; the gateway is at {layout.address('gateway')}. Ctrl-C stops it.", file=sys.stderr)
        while not stop.wait(POLL_SECONDS):
            events = suite.poll()
            for event in events:
                print(f"{event.child}: {event.message}", file=sys.stderr)
                if event.error:
                    print(f"--- last lines of {event.child}'s log:\n"
                          f"{tail(suite.child(event.child).log_path)}", file=sys.stderr)
            if events:
                print(status_table(suite.children), file=sys.stderr)
        return 0
    finally:
        print("stopping (gateway first) ...", file=sys.stderr)
        suite.stop()
        print("stopped.", file=sys.stderr)
