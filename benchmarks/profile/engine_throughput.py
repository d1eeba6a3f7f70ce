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
from services.profile import config as C
from services.profile.engine import ProfileEngine
from services.profile.store import LmdbProfileStore
from services.profile.writer import WriterProcess
from vitrine.loadtest.cpu import cpu_seconds
from vitrine.v1 import common_pb2


async def run(args: argparse.Namespace) -> None:
    root = tempfile.mkdtemp(prefix="vitrine-profile-engine-")
    store = LmdbProfileStore(root, map_size_mb=8192, sync=not args.no_sync)
    writer = WriterProcess(root, map_size_mb=8192, sync=not args.no_sync,
                           settings=store.settings) if args.writer_process else None
    engine = ProfileEngine(store, writer=writer, batch_max_events=args.batch_max_events)
    await engine.start()
    try:
        now = int(time.time() * 1000)
        streams = [make_events(args.events // args.streams, args.users, f"e{s}", now, s) for s in range(args.streams)]

        async def feed(events: list[common_pb2.Event]) -> AsyncIterator[common_pb2.Event]:
            for event in events:
                yield event

        started, cpu0 = time.perf_counter(), time.process_time()
        writer_cpu0 = (cpu_seconds(writer.pid) or 0.0) if writer is not None and writer.pid else 0.0
        summaries = await asyncio.gather(*(engine.track_stream(feed(s)) for s in streams))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        writer_cpu = (cpu_seconds(writer.pid) or 0.0) - writer_cpu0 if writer is not None and writer.pid else 0.0
        accepted = sum(s.accepted for s in summaries)
        split = f" (this process {cpu:.1f} s, writer process {writer_cpu:.1f} s)" if writer is not None else ""
        print(f"engine track_stream: {accepted} events in {elapsed:.2f} s = {accepted / elapsed:,.0f} events/s "
              f"({engine.batches} commits, {'no fsync' if args.no_sync else 'fsync each commit'}); "
              f"{accepted / max(cpu + writer_cpu, 1e-9):,.0f} events per CPU-second{split}; "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        await engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch-max-events", type=int, default=C.DEFAULT_BATCH_MAX_EVENTS)
    parser.add_argument("--no-sync", action="store_true", help="skip fsync (to see its share)")
    parser.add_argument("--writer-process", action="store_true",
                        help="fold and commit in a writer process, as the service does by default")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
