"""Open-loop load generator, run in its own process.

Requests leave at a fixed arrival rate whatever the answers do (not back-to-back), so a
slow server shows as latency, not as a politely lower offered load. Latency is measured
from each request's *scheduled* send time (no coordinated omission: if the generator
itself falls behind, that shows too, and the send lag is reported separately).

    python -m vitrine.loadtest.generator --target 127.0.0.1:50051 --mode vitrine \
        --users users.txt --products 100000 --steps 250,500,1000 --step-seconds 10

Prints one JSON object (all steps) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from vitrine.loadtest.echo import ECHO_METHOD
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2, recommend_pb2

# Only local targets: this is a benchmark, not a load test of somebody else's service.
ALLOWED_HOSTS = ("127.0.0.1", "localhost", "[::1]")
CHANNELS = 4                 # connections to the target (several gateway processes share the port)
REQUEST_TIMEOUT_S = 2.0
MAX_IN_FLIGHT = 5_000        # beyond this the generator refuses to send (counted as "client_backlog")
MAX_REQUESTS_PER_STEP = 200_000
PERSONALIZE_SHARE = 0.8      # the rest is Track
REQUEST_POOL = 2_000         # prebuilt Personalize requests, reused
DEVICES = ("mobile", "desktop", "tablet")
SOURCES = ("direct", "organic", "paid", "email", "social")
COUNTRIES = ("FR", "DE", "ES", "IT", "NL", "BE", "BR")

PERSONALIZE_ANSWERS = "_personalize"  # counters kept with the fallback reasons
DEGRADED = "_degraded"

Call = Callable[[], Awaitable[str]]  # returns "" for a clean answer or a label to count


def check_local(target: str) -> None:
    host = target.rsplit(":", 1)[0]
    if host not in ALLOWED_HOSTS:
        raise SystemExit(f"refusing to load {target}: only 127.0.0.1 / localhost targets are allowed")


def open_channels(target: str) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: separate TCP connections (spread over SO_REUSEPORT processes).
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(CHANNELS)]


class Workload:
    """80 % Personalize with 2 placements, 20 % Track, over real shopper and product ids."""

    def __init__(self, channels: list[grpc.aio.Channel], users: list[str], n_products: int, seed: int,
                 product_width: int) -> None:
        self.stubs = [gateway_pb2_grpc.PersonalizationServiceStub(c) for c in channels]
        self.rng = random.Random(seed)
        self.users = users
        self.n_products = n_products
        self.width = product_width
        self.counter = itertools.count()
        self.run_id = f"lt{int(time.time())}"
        self.pool = [self._personalize_request() for _ in range(REQUEST_POOL)]
        self.fallbacks: collections.Counter[str] = collections.Counter()

    def _product(self) -> str:
        return f"p{self.rng.randrange(self.n_products):0{self.width}d}"

    def _context(self) -> common_pb2.Context:
        rng = self.rng
        return common_pb2.Context(device_type=rng.choice(DEVICES), traffic_source=rng.choice(SOURCES),
                                  country=rng.choice(COUNTRIES), language="en", currency="EUR")

    def _personalize_request(self) -> gateway_pb2.PersonalizeRequest:
        rng = self.rng
        page = rng.choice(("home", "product", "category"))
        request = gateway_pb2.PersonalizeRequest(user_id=rng.choice(self.users), context=self._context(),
                                                 page_type=page)
        if page == "product":
            request.product_id = self._product()
            request.placements.extend([
                gateway_pb2.Placement(slot_id="similar", strategy=recommend_pb2.SIMILAR, k=8),
                gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU, k=8)])
        else:
            request.placements.extend([
                gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU, k=8),
                gateway_pb2.Placement(slot_id="trending", strategy=recommend_pb2.TRENDING, k=8)])
        return request

    def call(self) -> Call:
        i = next(self.counter)
        stub = self.stubs[i % len(self.stubs)]
        if self.rng.random() < PERSONALIZE_SHARE:
            request = self.pool[i % len(self.pool)]

            async def personalize() -> str:
                reply = await stub.Personalize(request, timeout=REQUEST_TIMEOUT_S)
                self.fallbacks[PERSONALIZE_ANSWERS] += 1
                if reply.fallback_reason:
                    reasons = reply.fallback_reason.split(",")
                    for reason in reasons:
                        self.fallbacks[reason] += 1
                    if any(r != "unknown_user" for r in reasons):
                        self.fallbacks[DEGRADED] += 1  # a backend missed its deadline or failed
                return ""
            return personalize
        event = common_pb2.Event(
            event_id=f"{self.run_id}-{i}", user_id=self.rng.choice(self.users), session_id=f"{self.run_id}-s",
            type=common_pb2.PRODUCT_VIEW, product_id=self._product(), timestamp_ms=int(time.time() * 1000),
            context=self._context())

        async def track() -> str:
            await stub.Track(profile_pb2.TrackRequest(event=event), timeout=REQUEST_TIMEOUT_S)
            return ""
        return track


class EchoWorkload:
    """The same schedule against the bare echo server, with a Personalize-sized payload."""

    def __init__(self, channels: list[grpc.aio.Channel]) -> None:
        self.calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            c.unary_unary(ECHO_METHOD) for c in channels]
        request = gateway_pb2.PersonalizeRequest(
            user_id="c0001234", page_type="home",
            context=common_pb2.Context(device_type="mobile", traffic_source="email", country="FR"),
            placements=[gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU, k=8)])
        self.payload = request.SerializeToString()
        self.counter = itertools.count()
        self.fallbacks: collections.Counter[str] = collections.Counter()

    def call(self) -> Call:
        method = self.calls[next(self.counter) % len(self.calls)]

        async def echo() -> str:
            await method(self.payload, timeout=REQUEST_TIMEOUT_S)
            return ""
        return echo


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    arr = np.asarray(values) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(arr.max())}


async def run_step(workload: Workload | EchoWorkload, rate: float, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() has 1 ms resolution: measure with this
    total = min(int(rate * seconds), MAX_REQUESTS_PER_STEP)
    latencies: list[float] = []
    lags: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    pending: set[asyncio.Task[None]] = set()
    workload.fallbacks.clear()
    last_done = [0.0]

    async def one(call: Call, scheduled: float) -> None:
        sent = clock()
        lags.append(sent - scheduled)
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            errors[err.code().name] += 1
            return
        done = clock()
        last_done[0] = max(last_done[0], done)
        latencies.append(done - scheduled)

    start = clock() + 0.05
    start_unix = time.time() + 0.05  # the step's wall-clock window, for CPU accounting (cpu.py)
    interval = 1.0 / rate
    i = 0
    while i < total:
        now = clock()
        due = start + i * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Send everything that is due (the loop may wake late under load: catch up, do not skip).
        while i < total and start + i * interval <= now:
            if len(pending) >= MAX_IN_FLIGHT:
                errors["client_backlog"] += 1
            else:
                task = loop.create_task(one(workload.call(), start + i * interval))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += 1
    sending_done = clock()
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 1.0)
    elapsed = max(last_done[0], sending_done) - start
    ok = len(latencies)
    return {
        "offered_rps": rate,
        "requests": total,
        "ok": ok,
        "achieved_rps": ok / elapsed if elapsed > 0 else 0.0,
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "fallbacks": dict(workload.fallbacks),
        "send_lag_p99_ms": _percentiles(lags)["p99_ms"],
        "started_unix": start_unix,
        "ended_unix": start_unix + elapsed,
        **_percentiles(latencies),
    }


async def run(args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    check_local(args.target)
    channels = open_channels(args.target)
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    if args.mode == "echo":
        workload: Workload | EchoWorkload = EchoWorkload(channels)
    else:
        workload = Workload(channels, users, args.products, args.seed, args.product_width)
    # Warm-up: connections, caches and the servers' first-call paths.
    await run_step(workload, min(200.0, args.steps[0]), args.warmup_seconds)
    steps = []
    for rate in args.steps:
        result = await run_step(workload, rate, args.step_seconds)
        print(f"[{args.mode}] offered {rate:.0f}/s: achieved {result['achieved_rps']:.0f}/s, "
              f"p99 {result['p99_ms']:.1f} ms, errors {result['error_count']}", file=sys.stderr, flush=True)
        steps.append(result)
        if result["error_count"] > 0.5 * result["requests"]:
            print(f"[{args.mode}] more than half failed: stopping here", file=sys.stderr)
            break
    for channel in channels:
        await channel.close()
    return {"mode": args.mode, "target": args.target, "step_seconds": args.step_seconds, "steps": steps}


def add_workload_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    """The flags of the workload both load drivers send (this one and benchmarks.loadtest.closed_loop):
    the target, `mode` (the suite's RPCs) or echo, the shopper ids and the product id space."""
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=(mode, "echo"), default=mode)
    parser.add_argument("--users", help=f"file of shopper ids (whitespace separated); {mode} mode")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--product-width", type=int, default=6)


def workload_users(args: argparse.Namespace) -> list[str]:
    """The shopper ids of --users (none in echo mode)."""
    return [u for u in Path(args.users).read_text().split() if u] if args.mode != "echo" else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, "vitrine")
    parser.add_argument("--steps", type=lambda s: [float(x) for x in s.split(",")], default=[250, 500, 1000])
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    users = workload_users(args)
    print(json.dumps(asyncio.run(run(args, users))))


if __name__ == "__main__":
    main()
