"""`vitrine loadtest`: open-loop load benchmark of the gateway against a bare echo ceiling.

Against a running suite (`--gateway`, `--profile-addresses`), or `--start-suite` to start
the four services as subprocesses on free ports with a temporary data directory and the
demo store scaled to 100,000 products and 1,000,000 shoppers (sizes are flags).
Writes benchmarks/loadtest/results.md, results.json and latency_vs_load.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the command runs: `vitrine --help` loads every command module
    from vitrine.loadtest.run import Options

NAME = "loadtest"
HELP = "open-loop load test of the gateway (80% Personalize, 20% Track) against an echo ceiling"
STORE_NOTE = "loadtest-store.json"  # what a kept --data-dir holds (sizes, load time)


def _rates(text: str) -> list[float]:
    rates = [float(x) for x in text.split(",") if x.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("a comma-separated list of positive rates, e.g. 250,500,1000")
    return rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", default="127.0.0.1:50051", help="gateway address (127.0.0.1 only)")
    parser.add_argument("--profile-addresses", default="127.0.0.1:50052",
                        help="profile shards, comma-separated (to sample real shopper ids)")
    parser.add_argument("--steps", type=_rates, default=None,
                        help="offered loads in requests/s (default 250,500,1000,1500,2000,3000)")
    parser.add_argument("--echo-steps", type=_rates, default=None,
                        help="offered loads for the echo ceiling (default 1000,2000,3000,4000,6000)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="duration of each step")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default benchmarks/loadtest)")
    parser.add_argument("--start-suite", action="store_true",
                        help="start the four services here (free ports, temporary data dir) and load the demo store")
    parser.add_argument("--products", type=int, default=100_000, help="demo store size with --start-suite")
    parser.add_argument("--shoppers", type=int, default=1_000_000, help="demo store size with --start-suite")
    parser.add_argument("--sessions-mean", type=float, default=None,
                        help="visits per shopper in the loaded store (default: the 'load' preset's)")
    parser.add_argument("--views-mean", type=float, default=None,
                        help="product views per visit in the loaded store (default: the 'load' preset's)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="with --start-suite: data directory, kept; a directory that already holds a "
                             "store is reused without loading (default: a temporary one, removed after)")
    parser.add_argument("--load-only", action="store_true",
                        help="with --start-suite --data-dir: load the store and stop (benchmark later)")
    parser.add_argument("--gateway-processes", type=int, default=1,
                        help="with --start-suite: gateway processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--profile-shards", type=int, default=1, help="with --start-suite: profile shards")
    parser.add_argument("--gateway-no-uvloop", action="store_true",
                        help="with --start-suite: run the gateway on the stock asyncio loop (comparison)")


def run(args: argparse.Namespace) -> int:
    from vitrine.loadtest import run as loadtest

    options = loadtest.Options(gateway=args.gateway,
                               profile_addresses=[a for a in args.profile_addresses.split(",") if a],
                               step_seconds=args.step_seconds, products=args.products, shoppers=args.shoppers)
    if args.steps:
        options.steps = args.steps
    if args.echo_steps:
        options.echo_steps = args.echo_steps
    if args.out:
        options.out_dir = args.out
    if not args.start_suite:
        options.meta = {"suite": f"running suite at {args.gateway}", "store": "as loaded"}
        return _report(loadtest.run(options))
    with tempfile.TemporaryDirectory(prefix="vitrine-loadtest-") as tmp:
        data_dir = (args.data_dir or Path(tmp)).resolve()
        return _with_suite(args, options, data_dir)


def _with_suite(args: argparse.Namespace, options: Options, data_dir: Path) -> int:
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo_sync
    from vitrine.loadtest import run as loadtest
    from vitrine.ports import free_port, free_port_base
    from vitrine.supervisor import DEFAULT_PORTS, SHARD_PORT_STEP, Suite, SuiteLayout, is_empty_data_dir

    ports = {name: free_port() for name in DEFAULT_PORTS}
    ports["profile"] = free_port_base(args.profile_shards, SHARD_PORT_STEP)
    layout = SuiteLayout(data_dir=data_dir, ports=ports, profile_shards=args.profile_shards)
    env = {"VITRINE_GATEWAY_PROCESSES": str(args.gateway_processes), "VITRINE_LOG_LEVEL": "WARNING"}
    if args.gateway_no_uvloop:
        env["VITRINE_GATEWAY_UVLOOP"] = "0"
    if args.load_only:
        # Loading a throwaway store: no fsync per commit. The benchmark run restarts the services
        # on the same directory with the defaults (fsync on), so Track is measured durable.
        env["VITRINE_PROFILE_SYNC"] = "0"
    print(f"starting the suite in {data_dir} (logs in {data_dir / 'logs'})", file=sys.stderr)
    store_file = data_dir / STORE_NOTE
    reuse = not is_empty_data_dir(data_dir)
    if reuse and not store_file.exists():
        print(f"{data_dir} holds data but no {STORE_NOTE}: not a load-test store", file=sys.stderr)
        return 2
    with Suite(layout, env=env) as suite:
        options.pids = {c.name: c.process.pid for c in suite.children if c.process is not None}
        if reuse:
            store = json.loads(store_file.read_text())
            print(f"reusing the store in {data_dir}: {store['description']}", file=sys.stderr)
        else:
            config = DemoConfig.preset("load", n_products=args.products, n_shoppers=args.shoppers,
                                       sessions_mean=args.sessions_mean, views_mean=args.views_mean)
            started = time.monotonic()
            report = load_demo_sync(config, profile_addresses=layout.profile_addresses(),
                                    gateway_address=layout.address("gateway"),
                                    segmentation_address=layout.address("segmentation"),
                                    recommendation_address=layout.address("recommendation"))
            load_seconds = time.monotonic() - started
            print(f"demo store loaded in {load_seconds:.0f} s", file=sys.stderr)
            store = {"products": args.products, "shoppers": args.shoppers, "load_seconds": load_seconds,
                     "description": f"demo store preset 'load': {args.products:,} products, "
                                    f"{args.shoppers:,} shoppers (loaded in {load_seconds:.0f} s: "
                                    f"{report.summary()})"}
            store_file.write_text(json.dumps(store))
            if args.load_only:
                return 0
        options.products, options.shoppers = store["products"], store["shoppers"]
        options.gateway = layout.address("gateway")
        options.profile_addresses = layout.profile_addresses()
        options.meta = {
            "store": store["description"],
            "suite": f"all four services local as separate processes, {args.profile_shards} profile shard(s), "
                     f"gateway processes: {args.gateway_processes}, "
                     f"{'stock asyncio loop' if args.gateway_no_uvloop else 'uvloop'} in the gateway",
        }
        return _report(loadtest.run(options))


def _report(results: dict) -> int:
    s = results["summary"]
    p99 = s["p99_ms_at_1000"]
    print(f"echo ceiling {s['echo_ceiling_rps']:.0f}/s; gateway sustained {s['vitrine_sustained_rps']:.0f}/s "
          f"({s['ratio_to_echo']:.2f} x echo); p99 at 1000/s: "
          f"{'n/a' if p99 is None else f'{p99:.2f} ms'}")
    return 0
