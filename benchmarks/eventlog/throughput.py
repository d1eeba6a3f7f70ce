"""Durable TrackBatch throughput of the profile service, embedded LMDB log vs scale-out (JetStream
on a local nats-server, one shard), in the same run on 127.0.0.1, through real in-process gRPC.

    .venv/bin/python -m benchmarks.eventlog.throughput [--batches 20] [--batch 1000]

Scale-out acknowledges after JetStream's (R=1 here, file storage) ack; the fold into the shard's
LMDB happens after, so the figure also reports how long the shard took to apply everything."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc

from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from vitrine.nats_server import nats_server_binary, single_node
from vitrine.serving import serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc


def make_event(i: int, base_ms: int) -> common_pb2.Event:
    return common_pb2.Event(event_id=f"b{i}", user_id=f"u{i % 5000}", session_id=f"s{i // 50}",
                            type=common_pb2.PRODUCT_VIEW, timestamp_ms=base_ms + i, product_id=f"p{i % 997}",
                            category="shoes")


async def run(config: ProfileConfig, batches: int, size: int) -> tuple[float, float]:
    service = ProfileService(config)
    base_ms = int(time.time() * 1000) - 3_600_000
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        started = time.perf_counter()
        for b in range(batches):
            events = [make_event(b * size + i, base_ms) for i in range(size)]
            summary = await stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=60)
            assert summary.accepted == size, summary
        acked = time.perf_counter() - started
        total = batches * size
        if service.shard is not None and service.shard.consumer is not None:
            deadline = time.monotonic() + 120  # bounded: a stuck shard ends the run
            # Polls a counter of the shard consumer (no event to wait on for "all applied").
            while service.shard.consumer.items_applied < total and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        applied = time.perf_counter() - started
    return total / acked, total / applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    if nats_server_binary() is None:
        raise SystemExit("nats-server is not installed (apt-get install -y nats-server)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        node = single_node(root / "nats")
        node.start()
        try:
            common = {"port": 0, "purge_interval_seconds": 0.0, "host": "127.0.0.1"}
            embedded = asyncio.run(run(ProfileConfig(data_dir=str(root / "embedded"), **common),
                                       args.batches, args.batch))
            scaled = asyncio.run(run(ProfileConfig(data_dir=str(root / "scaleout"), event_log=node.url,
                                                   **common), args.batches, args.batch))
        finally:
            node.stop()
    n = args.batches * args.batch
    print(f"{n} events in TrackBatch requests of {args.batch}, durable (fsync), 127.0.0.1")
    print(f"embedded LMDB log : {embedded[0]:10.0f} events/s acknowledged (folded before the ack)")
    print(f"scale-out JetStream: {scaled[0]:10.0f} events/s acknowledged, {scaled[1]:10.0f} events/s "
          "until the shard applied all")


if __name__ == "__main__":
    main()
