"""Load test of the profile service over gRPC on 127.0.0.1 (figures in benchmarks/profile.md).

Starts `python -m services.profile` in a subprocess on a free port with a temporary data
directory (durable commits: sync on), then measures
  * TrackStream events/s with durable acknowledgements (the summary returns after commit),
  * Track latency p50/p99 (sequential calls, and concurrent calls sharing group commits),
  * GetProfile latency p50/p99,
and deletes the data directory.

    .venv/bin/python -m benchmarks.profile.load --events 200000 --streams 4 --users 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from vitrine.health import wait_serving_async
from vitrine.loadtest.cpu import child_pids, own_cpu_seconds
from vitrine.ports import free_port
from vitrine.processes import stop_process
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ET = common_pb2.EventType


@contextlib.contextmanager
def profile_server(data_dir: str, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.profile", "--port", str(port), "--data-dir", data_dir,
         "--log-level", "WARNING", "--purge-interval-seconds", "0", *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        stop_process(proc, 10)


def make_events(n: int, users: int, prefix: str, now_ms: int, seed: int) -> list[common_pb2.Event]:
    rng = random.Random(seed)
    kinds = [ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.PRODUCT_VIEW, ET.PRODUCT_VIEW, ET.CATEGORY_VIEW, ET.SEARCH,
             ET.ADD_TO_CART, ET.PURCHASE]
    ctx = common_pb2.Context(device_type="mobile", country="DE", traffic_source="organic")
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        user = rng.randrange(users)
        ev = common_pb2.Event(event_id=f"{prefix}-{i}", user_id=f"user-{user}", session_id=f"s-{user}-{i // 5000}",
                              type=kind, timestamp_ms=now_ms - rng.randrange(3_600_000),
                              category=f"cat-{rng.randrange(40)}")
        if kind in (ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.PURCHASE):
            ev.product_id = f"prod-{rng.randrange(5000)}"
            ev.price = round(rng.uniform(5, 200), 2)
        if kind == ET.PURCHASE:
            ev.order_id = f"order-{prefix}-{i}"
        if kind == ET.SEARCH:
            ev.query = f"query {rng.randrange(100)}"
        if i % 10 == 0:
            ev.context.CopyFrom(ctx)
        out.append(ev)
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of the server and each of its child processes (the writer process)."""
    return {p: own_cpu_seconds(p) or 0.0 for p in (pid, *child_pids(pid))}


def cpu_since(before: dict[int, float], pid: int) -> tuple[float, str]:
    """Server CPU (all its processes) since `before`, and a per-process breakdown."""
    after = tree_cpu(pid)
    used = {p: after[p] - before.get(p, 0.0) for p in after}
    parts = ", ".join(f"{'service' if p == pid else 'writer'} {c:.1f} s" for p, c in used.items())
    return sum(used.values()), parts


def disk_usage(path: str) -> int:
    return sum(f.stat().st_blocks * 512 for f in Path(path).rglob("*") if f.is_file())


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


async def run(args: argparse.Namespace) -> None:
    data_dir = tempfile.mkdtemp(prefix="vitrine-profile-load-")
    port = free_port()
    try:
        with profile_server(data_dir, port, *args.server_arg) as proc:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = profile_pb2_grpc.ProfileServiceStub(channel)
                await wait_serving_async(channel, 30.0, process=proc)
                now = int(time.time() * 1000)

                # TrackStream: several concurrent streams, durable summaries.
                # Events are serialized up front and sent as bytes, so the client (on the same
                # two cores) spends as little CPU as possible.
                per_stream = args.events // args.streams
                batches = [[e.SerializeToString() for e in make_events(per_stream, args.users, f"st{s}", now, s)]
                           for s in range(args.streams)]
                track_stream = channel.stream_unary(
                    "/vitrine.v1.ProfileService/TrackStream",
                    request_serializer=None, response_deserializer=profile_pb2.TrackSummary.FromString,
                )
                started, cpu0, own0 = time.perf_counter(), tree_cpu(proc.pid), os.times()
                summaries = await asyncio.gather(*(track_stream(iter(b), timeout=600) for b in batches))
                elapsed = time.perf_counter() - started
                cpu, parts = cpu_since(cpu0, proc.pid)
                own1 = os.times()
                client_cpu = own1.user + own1.system - own0.user - own0.system
                accepted = sum(s.accepted for s in summaries)
                print(f"TrackStream: {accepted} events in {elapsed:.2f} s over {args.streams} streams = "
                      f"{accepted / elapsed:,.0f} events/s (durable); server CPU {cpu:.1f} s ({parts}) = "
                      f"{accepted / max(cpu, 1e-9):,.0f} events per server CPU-second, "
                      f"{cpu / elapsed:.2f} cores used; client CPU {client_cpu:.1f} s; "
                      f"load average {os.getloadavg()[0]:.1f}")

                if args.skip_latency:
                    return
                # Track latency, one call at a time.
                events = make_events(args.calls, args.users, "tr", now, 99)
                samples = []
                for ev in events:
                    t = time.perf_counter()
                    await stub.Track(profile_pb2.TrackRequest(event=ev), timeout=10)
                    samples.append(time.perf_counter() - t)
                p50, p99 = percentiles(samples)
                print(f"Track (sequential, {len(samples)} calls): p50 {p50:.2f} ms, p99 {p99:.2f} ms")

                # Track with concurrency: many callers share one commit.
                events = make_events(args.calls * 4, args.users, "tc", now, 98)
                sem = asyncio.Semaphore(args.concurrency)
                samples = []

                async def one(ev: common_pb2.Event) -> None:
                    async with sem:
                        t = time.perf_counter()
                        await stub.Track(profile_pb2.TrackRequest(event=ev), timeout=10)
                        samples.append(time.perf_counter() - t)

                started, cpu0 = time.perf_counter(), tree_cpu(proc.pid)
                await asyncio.gather(*(one(ev) for ev in events))
                elapsed = time.perf_counter() - started
                cpu, _ = cpu_since(cpu0, proc.pid)
                p50, p99 = percentiles(samples)
                print(f"Track ({args.concurrency} concurrent, {len(samples)} calls): p50 {p50:.2f} ms, "
                      f"p99 {p99:.2f} ms, {len(samples) / elapsed:,.0f} calls/s; "
                      f"{len(samples) / max(cpu, 1e-9):,.0f} calls per server CPU-second")

                # GetProfile latency.
                rng = random.Random(7)
                samples = []
                for _ in range(args.calls):
                    request = profile_pb2.GetProfileRequest(user_id=f"user-{rng.randrange(args.users)}")
                    t = time.perf_counter()
                    try:
                        await stub.GetProfile(request, timeout=10)
                    except grpc.aio.AioRpcError as err:
                        if err.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                    samples.append(time.perf_counter() - t)
                p50, p99 = percentiles(samples)
                print(f"GetProfile (sequential, {len(samples)} calls): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"data on disk: {disk_usage(data_dir) / 1e6:.1f} MB")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events sent with TrackStream")
    parser.add_argument("--streams", type=int, default=4, help="concurrent TrackStream calls")
    parser.add_argument("--users", type=int, default=20_000, help="distinct shoppers")
    parser.add_argument("--calls", type=int, default=2_000, help="Track / GetProfile calls for latency")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent Track calls")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for the server, e.g. --server-arg=--no-writer-process (repeatable)")
    parser.add_argument("--skip-latency", action="store_true", help="TrackStream only")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
