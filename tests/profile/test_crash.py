"""Kill the profile service with SIGKILL while clients stream events; after each restart every
acknowledged event is applied exactly once (in the log once, counted in the profile once)."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.profile.helpers import ET, ev
from vitrine.health import wait_serving_async
from vitrine.ports import free_port
from vitrine.v1 import profile_pb2, profile_pb2_grpc

pb = profile_pb2
ROOT = Path(__file__).resolve().parents[2]
ITERATIONS = 10
READY_S = 30.0  # bound on a restarted service reaching SERVING
USERS = 25


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.profile", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "WARNING", "--purge-interval-seconds", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def verify(stub: profile_pb2_grpc.ProfileServiceStub, acked: set[str]) -> int:
    """Every acknowledged event is in the log exactly once, nothing is in it twice, and every
    profile counted exactly the events of its log. Returns the number of logged events."""
    logged = collections.Counter()
    per_user = collections.Counter()
    async for event in stub.ScanEvents(pb.ScanEventsRequest(), timeout=30):
        logged[event.event_id] += 1
        per_user[event.user_id] += 1
    missing = [eid for eid in acked if logged[eid] != 1]
    assert not missing, f"{len(missing)} acknowledged events are not applied exactly once, e.g. {missing[:3]}"
    twice = [eid for eid, n in logged.items() if n > 1]
    assert not twice, f"events logged twice: {twice[:3]}"
    counted = {p.user_id: p.event_count async for p in stub.ScanProfiles(pb.ScanProfilesRequest(), timeout=30)}
    assert counted == dict(per_user), "a profile's event_count differs from its event log"
    return sum(logged.values())


async def client(stub: profile_pb2_grpc.ProfileServiceStub, acked: set[str], worker: int, iteration: int,
                 rng: random.Random) -> None:
    """Streams small batches (and single Tracks) until the server dies; records what was acknowledged."""
    n = 0
    try:
        while True:
            batch = []
            for _ in range(rng.randrange(5, 60)):
                n += 1
                kind = rng.choice([ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.PURCHASE])
                batch.append(ev(kind, user=f"user-{rng.randrange(USERS)}", event_id=f"i{iteration}-w{worker}-{n}",
                                order_id=f"o-{iteration}-{worker}-{n}"))
            if rng.random() < 0.2:
                for event in batch[:5]:
                    answer = await stub.Track(pb.TrackRequest(event=event), timeout=5)
                    assert answer.applied
                    acked.add(event.event_id)
            else:
                summary = await stub.TrackStream(iter(batch), timeout=5)
                assert summary.accepted == len(batch), summary
                acked.update(e.event_id for e in batch)
    except grpc.aio.AioRpcError:
        return  # the server was killed


@pytest.mark.slow
async def test_sigkill_while_streaming_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    acked: set[str] = set()
    resent_ok = 0
    for iteration in range(ITERATIONS + 1):
        port = free_port()
        proc = start_server(tmp_path, port)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = profile_pb2_grpc.ProfileServiceStub(channel)
                await wait_serving_async(channel, READY_S, process=proc)
                logged = await verify(stub, acked)
                assert logged >= len(acked)
                if acked:  # re-sending acknowledged events after the restart changes nothing
                    replay = [e async for e in stub.ScanEvents(pb.ScanEventsRequest(limit=50), timeout=30)
                              if e.event_id in acked]
                    summary = await stub.TrackStream(iter(replay), timeout=10)
                    assert (summary.accepted, summary.duplicates) == (0, len(replay))
                    resent_ok += len(replay)
                if iteration == ITERATIONS:
                    break
                workers = [asyncio.create_task(client(stub, acked, w, iteration, rng)) for w in range(3)]
                await asyncio.sleep(rng.uniform(0.2, 0.5))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                await asyncio.wait_for(asyncio.gather(*workers), 15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert len(acked) > ITERATIONS * 20, f"too few events were acknowledged ({len(acked)}) to mean anything"
    assert resent_ok > 0
