"""TrackBatch ingest over gRPC on 127.0.0.1, beside a no-op baseline in the same run.

Two servers, one after the other, each fed the same pre-serialized TrackBatch requests
(1,000 events each, `--in-flight` calls outstanding) by a client in this process:
  * baseline: a bare grpc.aio ProfileService whose TrackBatch decodes the request (as the real
    one does) and answers an empty summary: the floor of receiving the bytes in Python;
  * the profile service (`python -m services.profile`, durable: every event acknowledged only
    once its group commit is fsync'ed), with its writer process.
Reports events/s and CPU µs per event of each process (client, service, writer), the stored
bytes per profile, and deletes the data directory. Bounded by `--events`.

    .venv/bin/python -m benchmarks.profile.batch_load --events 200000 --users 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import lmdb

from benchmarks.profile.load import make_events
from vitrine.health import wait_serving_async
from vitrine.loadtest.cpu import child_pids, own_cpu_seconds
from vitrine.ports import free_port
from vitrine.processes import stop_process
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
BATCH = 1_000


class NoopProfiles(profile_pb2_grpc.ProfileServiceServicer):
    async def TrackBatch(self, request: profile_pb2.TrackBatchRequest,
                         context: grpc.aio.ServicerContext) -> profile_pb2.TrackSummary:
        return profile_pb2.TrackSummary(accepted=len(request.events))


async def serve_noop(port: int) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    profile_pb2_grpc.add_ProfileServiceServicer_to_server(NoopProfiles(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def server(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        stop_process(proc, 30)


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: own_cpu_seconds(p) or 0.0 for p in (pid, *child_pids(pid))}


async def follow_all(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes]) -> None:
    """Read the whole feed from seq 0 to the head, as a consumer catching up would: one message
    per item (FollowEvents), then grouped (FollowEventBatches, 5,000 items a message)."""
    stub = profile_pb2_grpc.ProfileServiceStub(channel)
    head = (await stub.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
        event_id="feed-head", user_id="feed-head", type=common_pb2.EventType.PAGE_VIEW)), timeout=60)).seq
    request = profile_pb2.FollowEventsRequest(from_seq=0, max_batch=5000)
    for name, call in (("FollowEvents", stub.FollowEvents(request)),
                       ("FollowEventBatches", stub.FollowEventBatches(request))):
        items = 0
        cpu0, own0, started = tree_cpu(proc.pid), os.times(), time.perf_counter()
        async for message in call:
            last = message.items[-1] if isinstance(message, profile_pb2.LoggedEventBatch) else message
            items += len(message.items) if isinstance(message, profile_pb2.LoggedEventBatch) else 1
            if last.seq >= head:
                break
        call.cancel()
        elapsed = time.perf_counter() - started
        own1, cpu1 = os.times(), tree_cpu(proc.pid)
        server = cpu1.get(proc.pid, 0.0) - cpu0.get(proc.pid, 0.0)
        client = own1.user + own1.system - own0.user - own0.system
        print(f"{'feed':9s}: {name} from 0 to the head: {items:,} items in {elapsed:.2f} s = "
              f"{items / elapsed:,.0f} items/s; CPU per item: service {server / items * 1e6:.1f} µs, "
              f"client {client / items * 1e6:.1f} µs", flush=True)


async def drive(port: int, proc: subprocess.Popen[bytes], requests: list[bytes], in_flight: int,
                label: str, probe: bool = False, follow: bool = False) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                         options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        await wait_serving_async(channel, 60.0, process=proc)
        call = channel.unary_unary("/vitrine.v1.ProfileService/TrackBatch", request_serializer=None,
                                   response_deserializer=profile_pb2.TrackSummary.FromString)
        await call(requests[0], timeout=60)  # warm-up: connection, first profiles (not counted)
        todo = iter(requests[1:])
        accepted = 0

        async def worker() -> None:
            nonlocal accepted
            for request in todo:
                summary = await call(request, timeout=120)
                accepted += summary.accepted + summary.duplicates
        latencies: list[float] = []
        done = asyncio.Event()

        async def track_probe() -> None:
            # One Track at a time while the batches stream: the wait a lone caller sees behind
            # saturated group commits (not counted in the events/s).
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            i = 0
            while not done.is_set():
                i += 1
                event = common_pb2.Event(event_id=f"probe-{i}", user_id=f"probe-{i % 50}", session_id="probe",
                                         type=common_pb2.EventType.PAGE_VIEW)
                t = time.perf_counter()
                await stub.Track(profile_pb2.TrackRequest(event=event), timeout=60)
                latencies.append(time.perf_counter() - t)

        async def load() -> None:
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            done.set()

        cpu0, own0, started = tree_cpu(proc.pid), os.times(), time.perf_counter()
        await asyncio.gather(load(), *([track_probe()] if probe else []))
        elapsed = time.perf_counter() - started
        own1, cpu1 = os.times(), tree_cpu(proc.pid)
        if follow:
            await follow_all(channel, proc)
    client = own1.user + own1.system - own0.user - own0.system
    used = {p: cpu1[p] - cpu0.get(p, 0.0) for p in cpu1}
    out = {"events": accepted, "seconds": elapsed, "events_per_s": accepted / elapsed,
           "client_us": client / accepted * 1e6, "server_us": used.get(proc.pid, 0.0) / accepted * 1e6,
           "writer_us": sum(c for p, c in used.items() if p != proc.pid) / accepted * 1e6}
    out["total_us"] = out["client_us"] + out["server_us"] + out["writer_us"]
    if latencies:
        ordered = sorted(latencies)
        out["track_p50_ms"] = ordered[len(ordered) // 2] * 1000
        out["track_p99_ms"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        print(f"{label:9s}: a lone Track during the load ({len(ordered)} calls): p50 {out['track_p50_ms']:.1f} ms, "
              f"p99 {out['track_p99_ms']:.1f} ms", flush=True)
    print(f"{label:9s}: {accepted:,} events in {elapsed:.2f} s = {out['events_per_s']:>9,.0f} events/s; CPU per "
          f"event: client {out['client_us']:.1f} µs, service {out['server_us']:.1f} µs, writer "
          f"{out['writer_us']:.1f} µs, total {out['total_us']:.1f} µs", flush=True)
    return out


def profile_bytes(path: Path) -> tuple[int, float]:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        db = env.open_db(b"profiles", create=False)
        with env.begin(db=db) as txn:
            sizes = [len(v) for _, v in txn.cursor()]
    finally:
        env.close()
    return len(sizes), sum(sizes) / max(1, len(sizes))


async def run(args: argparse.Namespace) -> None:
    now = int(time.time() * 1000)
    events = make_events(args.events + BATCH, args.users, "b", now, 1)
    requests = [profile_pb2.TrackBatchRequest(events=events[i:i + BATCH]).SerializeToString()
                for i in range(0, len(events), BATCH)]
    print(f"{len(requests) - 1} TrackBatch requests of {BATCH} events, {args.users:,} shoppers, "
          f"{args.in_flight} in flight; load average {os.getloadavg()[0]:.1f}", flush=True)
    port = free_port()
    with server(["-m", "benchmarks.profile.batch_load", "--noop-server", str(port)]) as proc:
        base = await drive(port, proc, requests, args.in_flight, "no-op")
    data_dir = tempfile.mkdtemp(prefix="vitrine-profile-batch-")
    try:
        port = free_port()
        argv = ["-m", "services.profile", "--port", str(port), "--data-dir", data_dir, "--log-level", "WARNING",
                "--purge-interval-seconds", "0", *args.server_arg]
        with server(argv) as proc:
            real = await drive(port, proc, requests, args.in_flight, "profile", probe=args.track_probe,
                               follow=args.follow)
        n, mean = profile_bytes(Path(data_dir) / "profile")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"profile / no-op: {real['events_per_s'] / base['events_per_s']:.2f} of the baseline's events/s; "
          f"{n:,} profiles stored, {mean:.0f} bytes per profile (StoredProfile value); "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events sent (after one warm-up batch)")
    parser.add_argument("--users", type=int, default=20_000, help="distinct shoppers")
    parser.add_argument("--in-flight", type=int, default=4, help="TrackBatch calls outstanding")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for the profile service (repeatable)")
    parser.add_argument("--track-probe", action="store_true",
                        help="also time a lone sequential Track during the profile run")
    parser.add_argument("--follow", action="store_true",
                        help="then read the whole feed (FollowEvents from 0) and report items/s")
    parser.add_argument("--noop-server", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_server:
        asyncio.run(serve_noop(args.noop_server))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
