"""Kill the profile service with SIGKILL while clients stream events; after each restart every
acknowledged event is applied exactly once (in the log once, counted in the profile once)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest

from tests.profile.helpers import ET, ev
from tests.profile.restarts import serving_process, sigkill_under_load, verify
from vitrine.v1 import profile_pb2, profile_pb2_grpc

pb = profile_pb2
ITERATIONS = 10
USERS = 25


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
        async with serving_process(tmp_path) as (proc, stub):
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
            await sigkill_under_load(proc, workers, rng.uniform(0.2, 0.5), 15)
    assert len(acked) > ITERATIONS * 20, f"too few events were acknowledged ({len(acked)}) to mean anything"
    assert resent_ok > 0
