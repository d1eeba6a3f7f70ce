"""Ingest throughput of the profile engine without gRPC: the same writer, group commit and fsync
as the service, fed by in-process coroutines. Separates storage + fold cost from RPC cost.

    .venv/bin/python -m benchmarks.profile.engine_throughput --events 100000 --users 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator

from benchmarks.profile.load import make_events
from services.profile.engine import ProfileEngine
from services.profile.store import LmdbProfileStore
from vitrine.v1 import common_pb2


async def run(args: argparse.Namespace) -> None:
    root = tempfile.mkdtemp(prefix="vitrine-profile-engine-")
    engine = ProfileEngine(LmdbProfileStore(root, map_size_mb=8192, sync=not args.no_sync))
    await engine.start()
    try:
        now = int(time.time() * 1000)
        streams = [make_events(args.events // args.streams, args.users, f"e{s}", now, s) for s in range(args.streams)]

        async def feed(events: list[common_pb2.Event]) -> AsyncIterator[common_pb2.Event]:
            for event in events:
                yield event

        started, cpu0 = time.perf_counter(), time.process_time()
        summaries = await asyncio.gather(*(engine.track_stream(feed(s)) for s in streams))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        accepted = sum(s.accepted for s in summaries)
        print(f"engine track_stream: {accepted} events in {elapsed:.2f} s = {accepted / elapsed:,.0f} events/s "
              f"({engine.batches} commits, {'no fsync' if args.no_sync else 'fsync each commit'}); "
              f"{accepted / max(cpu, 1e-9):,.0f} events per CPU-second; load average {os.getloadavg()[0]:.1f}")
    finally:
        await engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--no-sync", action="store_true", help="skip fsync (to see its share)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
