"""TrackBatch: limits, rejections with reasons, idempotency, one group commit, and SIGKILL
between and during batches (through real servers)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest

from services.profile import config as C
from tests.profile.conftest import Profiles
from tests.profile.helpers import ET, ev, now_ms
from tests.profile.restarts import serving_process, sigkill_under_load, verify
from tests.support import assert_status
from vitrine.v1 import profile_pb2, profile_pb2_grpc

pb = profile_pb2


async def test_a_full_batch_is_one_durable_group_commit(profiles: Profiles) -> None:
    events = [ev(ET.PRODUCT_VIEW, user=f"u{i % 37}", event_id=f"b{i}", product_id=f"p{i % 11}")
              for i in range(C.MAX_TRACK_BATCH)]
    before = profiles.engine.batches
    summary = await profiles.stub.TrackBatch(pb.TrackBatchRequest(events=events), timeout=30)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (C.MAX_TRACK_BATCH, 0, 0)
    assert profiles.engine.batches == before + 1
    profile = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="u0"), timeout=10)
    assert profile.event_count == len(range(0, C.MAX_TRACK_BATCH, 37))


async def test_more_than_the_limit_is_invalid_and_changes_nothing(profiles: Profiles) -> None:
    events = [ev(ET.PAGE_VIEW, user="big", event_id=f"x{i}") for i in range(C.MAX_TRACK_BATCH + 1)]
    err = await assert_status(profiles.stub.TrackBatch(pb.TrackBatchRequest(events=events), timeout=30),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert f"at most {C.MAX_TRACK_BATCH}" in (err.details() or "")
    await assert_status(profiles.stub.GetProfile(pb.GetProfileRequest(user_id="big"), timeout=10),
                        grpc.StatusCode.NOT_FOUND)


async def test_bad_events_are_counted_with_reasons_and_the_good_ones_apply(profiles: Profiles) -> None:
    t = now_ms()
    events = [
        ev(ET.PAGE_VIEW, user="ok", t=t, event_id="g0"),
        ev(ET.PURCHASE, user="ok", t=t, event_id="bad-price", price=-1),
        ev(ET.PRODUCT_VIEW, user="ok", t=t, event_id="g1"),
        ev(ET.PAGE_VIEW, user="", t=t, event_id="no-user"),
        ev(ET.PAGE_VIEW, user="ok", t=t + 3_600_000, event_id="future"),
    ]
    summary = await profiles.stub.TrackBatch(pb.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 0, 3)
    assert [e.split(":")[0] for e in summary.errors] == ["event 1 (bad-price)", "event 3 (no-user)",
                                                         "event 4 (future)"]
    assert "price" in summary.errors[0] and "user_id" in summary.errors[1]
    profile = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="ok"), timeout=10)
    assert profile.event_count == 2


async def test_a_batch_sent_twice_is_applied_once(profiles: Profiles) -> None:
    events = [ev(ET.ADD_TO_CART, user="twice", event_id=f"t{i}", product_id=f"p{i}") for i in range(50)]
    first = await profiles.stub.TrackBatch(pb.TrackBatchRequest(events=events), timeout=10)
    again = await profiles.stub.TrackBatch(pb.TrackBatchRequest(events=events + events[:5]), timeout=10)
    assert (first.accepted, first.duplicates) == (50, 0)
    assert (again.accepted, again.duplicates) == (0, 55)
    profile = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="twice"), timeout=10)
    assert profile.event_count == 50 and len(profile.cart) == 50


async def test_an_empty_batch_is_an_empty_summary(profiles: Profiles) -> None:
    summary = await profiles.stub.TrackBatch(pb.TrackBatchRequest(), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (0, 0, 0)


async def _send_batches(stub: profile_pb2_grpc.ProfileServiceStub, acked: set[str], worker: int, iteration: int,
                        rng: random.Random) -> None:
    n = 0
    try:
        while True:
            batch = []
            for _ in range(rng.randrange(20, C.MAX_TRACK_BATCH)):
                n += 1
                kind = rng.choice([ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.PURCHASE])
                batch.append(ev(kind, user=f"user-{rng.randrange(40)}", event_id=f"i{iteration}-w{worker}-{n}",
                                order_id=f"o-{iteration}-{worker}-{n}"))
            summary = await stub.TrackBatch(pb.TrackBatchRequest(events=batch), timeout=10)
            assert summary.accepted == len(batch), summary
            acked.update(e.event_id for e in batch)
    except grpc.aio.AioRpcError:
        return  # the server was killed


async def _sigkill_loop(tmp_path: Path, iterations: int) -> None:
    rng = random.Random(20261203 + iterations)
    acked: set[str] = set()
    for iteration in range(iterations + 1):
        async with serving_process(tmp_path) as (proc, stub):
            assert await verify(stub, acked) >= len(acked)
            if iteration == iterations:
                break
            workers = [asyncio.create_task(_send_batches(stub, acked, w, iteration, rng)) for w in range(2)]
            # the kill lands between or inside batches
            await sigkill_under_load(proc, workers, rng.uniform(0.2, 0.6), 20)
    assert len(acked) > iterations * 100, f"too few events were acknowledged ({len(acked)}) to mean anything"


async def test_sigkill_during_batches_loses_no_acknowledged_event(tmp_path: Path) -> None:
    await _sigkill_loop(tmp_path, 2)


@pytest.mark.slow
async def test_sigkill_during_batches_ten_times(tmp_path: Path) -> None:
    await _sigkill_loop(tmp_path, 10)


async def test_a_lone_track_joins_the_next_group_commit_not_the_end_of_the_queue(tmp_path: Path) -> None:
    from services.profile.engine import ProfileEngine
    from services.profile.store import LmdbProfileStore

    engine = ProfileEngine(LmdbProfileStore(tmp_path, sync=False), batch_max_events=C.MAX_TRACK_BATCH)
    await engine.start()
    try:
        done: list[str] = []

        async def batch(n: int) -> None:
            events = [ev(ET.PAGE_VIEW, user=f"bulk{i % 20}", event_id=f"b{n}-{i}") for i in range(C.MAX_TRACK_BATCH)]
            await engine.track_batch(events)
            done.append(f"batch{n}")

        async def track() -> None:
            await engine.track(ev(ET.PAGE_VIEW, user="lone", event_id="lone"))
            done.append("track")

        tasks = [asyncio.create_task(batch(n)) for n in range(6)]
        tasks.append(asyncio.create_task(track()))  # queued behind six full batches
        await asyncio.gather(*tasks)
        assert done.index("track") <= 2, done  # with the first or second group commit, not the seventh
    finally:
        await engine.stop()
