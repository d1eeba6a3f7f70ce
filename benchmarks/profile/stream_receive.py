"""The floor of Python gRPC client streaming: server CPU per received message, no work done.

    .venv/bin/python -m benchmarks.profile.stream_receive [--messages 60000] [--streams 4] [--rounds 2]

A no-op sink (`stream Event -> bytes`, counting messages) is served by grpc.aio and by the
thread-pool (sync) server in turn, each in its own process; a client process sends pre-serialized
Events on 4 streams. The server's CPU time per message (from /proc) is what one TrackStream
message costs before validation, fold or LMDB: the reason durable ingest of one message per event
cannot reach 20,000 events/s on 2 cores in Python (see profile.md). 127.0.0.1 only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import subprocess
import sys
import time

import grpc

from vitrine.loadtest.cpu import own_cpu_seconds
from vitrine.ports import free_port
from vitrine.v1 import common_pb2

SERVICE, METHOD = "bench.Sink", "Take"


def _identity(data: bytes) -> bytes:
    return data


def _handler(take: object) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.stream_unary_rpc_method_handler(
        take, request_deserializer=common_pb2.Event.FromString, response_serializer=_identity)})


def serve_sync(port: int) -> None:
    def take(requests, context):  # type: ignore[no-untyped-def]
        return str(sum(1 for _ in requests)).encode()

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((_handler(take),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    async def take(requests, context):  # type: ignore[no-untyped-def]
        n = 0
        async for _ in requests:
            n += 1
        return str(n).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(take),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def send(port: int, messages: int, streams: int) -> float:
    """Seconds to send `messages` pre-serialized Events over `streams` concurrent streams."""
    event = common_pb2.Event(event_id="e" * 20, user_id="u" * 12, type=common_pb2.PRODUCT_VIEW,
                             product_id="p12345", timestamp_ms=1_795_448_154_018).SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.stream_unary(f"/{SERVICE}/{METHOD}", request_serializer=_identity,
                                    response_deserializer=_identity)
        per = messages // streams
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            list(pool.map(lambda _: call(iter([event] * per), timeout=120), range(streams)))
        return time.perf_counter() - started


def measure(mode: str, messages: int, streams: int) -> tuple[float, float]:
    """(messages per second, server CPU µs per message) for one server mode."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.profile.stream_receive", "--serve", mode,
                               "--port", str(port)])
    try:
        client = [sys.executable, "-m", "benchmarks.profile.stream_receive", "--send", "--port", str(port),
                  "--messages", str(messages), "--streams", str(streams)]
        subprocess.run([*client[:-4], "--messages", "1000", "--streams", "1"], check=True, capture_output=True,
                       timeout=60)  # warm up
        before = own_cpu_seconds(server.pid) or 0.0
        seconds = float(subprocess.run(client, check=True, capture_output=True, text=True, timeout=180).stdout)
        used = (own_cpu_seconds(server.pid) or 0.0) - before
    finally:
        server.terminate()
        server.wait(10)
    return messages / seconds, used / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=["aio", "sync"], help=argparse.SUPPRESS)
    parser.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "aio":
        asyncio.run(serve_aio(args.port))
    elif args.serve == "sync":
        serve_sync(args.port)
    elif args.send:
        print(send(args.port, args.messages, args.streams))
    else:
        print("| server | messages/s (client and server on this machine) | server CPU per message |")
        print("|---|---:|---:|")
        for _ in range(args.rounds):
            for mode in ("aio", "sync"):
                rate, cpu = measure(mode, args.messages, args.streams)
                print(f"| {mode} | {rate:,.0f} | {cpu:.1f} µs |", flush=True)


if __name__ == "__main__":
    main()
