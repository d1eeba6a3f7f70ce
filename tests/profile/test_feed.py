"""FollowEvents: the event log as a feed, through a real in-process server (both write paths)."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import grpc

from services.profile.store import LmdbProfileStore
from tests.profile.conftest import Profiles, make_service
from tests.profile.helpers import DAY_MS, ET, ev, now_ms
from tests.profile.restarts import serving_process, sigkill_under_load
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

pb = profile_pb2
TIMEOUT = 20.0


async def take(stub: profile_pb2_grpc.ProfileServiceStub, from_seq: int, n: int,
               max_batch: int = 0) -> list[pb.LoggedEvent]:
    """The first `n` items of a FollowEvents stream from `from_seq`, then the stream is cancelled."""
    call = stub.FollowEvents(pb.FollowEventsRequest(from_seq=from_seq, max_batch=max_batch))
    out: list[pb.LoggedEvent] = []

    async def run() -> None:
        async for item in call:
            out.append(item)
            if len(out) >= n:
                return

    try:
        await asyncio.wait_for(run(), TIMEOUT)
    finally:
        call.cancel()
    return out


async def test_every_event_once_in_log_order_with_its_seq(profiles: Profiles) -> None:
    stub = profiles.stub
    t = now_ms()
    seqs = []
    for i in range(5):
        answer = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user=f"u{i % 2}", t=t, event_id=f"t{i}")),
                                  timeout=10)
        seqs.append(answer.seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and seqs[0] >= 1
    duplicate = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user="u0", t=t, event_id="t0")), timeout=10)
    assert (duplicate.applied, duplicate.seq) == (False, 0)
    batch = [ev(ET.PRODUCT_VIEW, user=f"s{i % 3}", t=t, event_id=f"s{i}", product_id=f"p{i}") for i in range(300)]
    assert (await stub.TrackStream(iter(batch), timeout=30)).accepted == 300

    items = await take(stub, 0, 305, max_batch=64)
    assert [i.event.event_id for i in items] == [f"t{i}" for i in range(5)] + [f"s{i}" for i in range(300)]
    assert [i.seq for i in items[:5]] == seqs
    assert all(a.seq < b.seq for a, b in itertools.pairwise(items))
    first = items[5]
    assert (first.event.user_id, first.canonical_user_id, first.event.product_id) == ("s0", "s0", "p0")
    assert first.WhichOneof("item") == "event" and not first.personalization_off


async def test_resume_from_a_cursor_is_exactly_once(profiles: Profiles) -> None:
    stub = profiles.stub
    t = now_ms()
    events = [ev(ET.PAGE_VIEW, user=f"u{i % 7}", t=t, event_id=f"e{i}") for i in range(120)]
    assert (await stub.TrackStream(iter(events), timeout=30)).accepted == 120
    seen: list[pb.LoggedEvent] = []
    cursor = 0
    for size in (1, 17, 40, 62):  # reconnect three times, each from the last seq seen + 1
        part = await take(stub, cursor, size, max_batch=8)
        seen += part
        cursor = part[-1].seq + 1
    assert [i.event.event_id for i in seen] == [f"e{i}" for i in range(120)]


async def test_live_tail_gets_new_events_without_polling(profiles: Profiles) -> None:
    stub = profiles.stub
    first = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, event_id="before")), timeout=10)
    call = stub.FollowEvents(pb.FollowEventsRequest(from_seq=first.seq + 1))
    received: asyncio.Queue[pb.LoggedEvent] = asyncio.Queue()

    async def follow() -> None:
        async for item in call:
            received.put_nowait(item)

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(call.initial_metadata(), TIMEOUT)  # sent once from_seq is accepted
        for i in range(3):
            # The follower is parked at the head before each event: it is woken, not polling.
            await asyncio.wait_for(profiles.engine.wait_followers_at_head(1), TIMEOUT)
            answer = await stub.Track(pb.TrackRequest(event=ev(ET.ADD_TO_CART, event_id=f"live{i}")), timeout=10)
            item = await asyncio.wait_for(received.get(), TIMEOUT)
            assert (item.event.event_id, item.seq) == (f"live{i}", answer.seq)
    finally:
        call.cancel()
        task.cancel()
    assert received.empty()


async def test_identity_and_erasure_are_items_and_erased_data_is_redacted(profiles: Profiles) -> None:
    stub = profiles.stub
    t = now_ms()
    events = [ev(ET.PRODUCT_VIEW, user="anon-1", t=t, event_id=f"a{i}") for i in range(3)]
    events += [ev(ET.PURCHASE, user="cust-1", t=t, event_id="c0"), ev(ET.PAGE_VIEW, user="other", t=t, event_id="o0")]
    assert (await stub.TrackStream(iter(events), timeout=30)).accepted == 5
    await stub.Identify(pb.IdentifyRequest(anonymous_id="anon-1", customer_id="cust-1"), timeout=10)
    await stub.Identify(pb.IdentifyRequest(anonymous_id="anon-1", customer_id="cust-1"), timeout=10)  # no news
    items = await take(stub, 0, 6)
    identity = items[-1]
    assert identity.WhichOneof("item") == "identity"
    assert (identity.identity.anonymous_id, identity.identity.customer_id) == ("anon-1", "cust-1")
    assert identity.identity.first_registration and identity.canonical_user_id == "cust-1"

    after = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user="anon-1", event_id="late")), timeout=10)
    assert after.user_id == "cust-1"
    assert (await stub.DeleteProfile(pb.DeleteProfileRequest(user_id="anon-1"), timeout=10)).deleted
    await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user="other", event_id="o1")), timeout=10)
    replay = await take(stub, 0, 3)
    kinds = [(i.WhichOneof("item"), i.event.event_id) for i in replay]
    assert kinds == [("event", "o0"), ("erasure", ""), ("event", "o1")]
    erasure = replay[1].erasure
    assert (erasure.user_id, list(erasure.aliases)) == ("cust-1", ["anon-1"]) and erasure.erased_ms > 0
    assert replay[1].seq > after.seq  # the erasure comes after everything it erased


async def test_events_without_personalization_consent_are_flagged(profiles: Profiles) -> None:
    stub = profiles.stub
    await stub.SetConsent(pb.SetConsentRequest(user_id="quiet", consent=common_pb2.Consent(personalization=False)),
                          timeout=10)
    await stub.Track(pb.TrackRequest(event=ev(ET.PRODUCT_VIEW, user="quiet", event_id="q")), timeout=10)
    (item,) = await take(stub, 0, 1)
    assert item.personalization_off and item.event.event_id == "q"


async def test_bad_from_seq_is_a_clear_status(profiles: Profiles) -> None:
    stub = profiles.stub
    answer = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, event_id="x")), timeout=10)

    async def first(from_seq: int, max_batch: int = 0) -> None:
        async for _ in stub.FollowEvents(pb.FollowEventsRequest(from_seq=from_seq, max_batch=max_batch),
                                         timeout=10):
            return

    err = await assert_status(first(answer.seq + 2), grpc.StatusCode.OUT_OF_RANGE)
    assert f"the last seq is {answer.seq}" in (err.details() or "")
    await assert_status(first(-1), grpc.StatusCode.INVALID_ARGUMENT)
    await assert_status(first(0, -5), grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_cursor_before_the_retained_start_names_the_earliest_seq(tmp_path: Path) -> None:
    t = now_ms()
    store = LmdbProfileStore(tmp_path / "profile", sync=False)
    try:
        old = [ev(ET.PAGE_VIEW, user="u", t=t - 500 * DAY_MS, event_id=f"old{i}") for i in range(4)]
        young = [ev(ET.PAGE_VIEW, user="u", t=t, event_id=f"young{i}") for i in range(2)]
        store.apply_events(old + young, t)
        assert store.trim_log(t - 400 * DAY_MS, 2) == (2, False)  # chunked: resumes
        assert store.trim_log(t - 400 * DAY_MS, 100) == (2, True)
        assert store.log_bounds() == (5, 6)
    finally:
        store.close()
    service = make_service(tmp_path)
    async with serving(service, service.config) as running, channel_to(running) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)

        async def first(from_seq: int) -> pb.LoggedEvent:
            async for item in stub.FollowEvents(pb.FollowEventsRequest(from_seq=from_seq), timeout=10):
                return item
            raise AssertionError("empty feed")

        err = await assert_status(first(2), grpc.StatusCode.FAILED_PRECONDITION)
        assert "earliest available seq is 5" in (err.details() or "")
        assert (await first(0)).event.event_id == "young0"
        assert (await first(5)).seq == 5


def test_purge_takes_the_feed_items_of_the_events_it_deletes(tmp_path: Path) -> None:
    t = now_ms()
    store = LmdbProfileStore(tmp_path, sync=False)
    try:
        store.apply_events([ev(ET.PAGE_VIEW, user="u", t=t, event_id="young"),
                            ev(ET.PAGE_VIEW, user="u", t=t - 500 * DAY_MS, event_id="late-old")], t)
        deleted, _ = store.purge_events(t - 400 * DAY_MS, b"", 100)
        assert deleted == 1
        assert [pb.LoggedEvent.FromString(raw).event.event_id for _, raw in store.read_log(0, 10)] == ["young"]
    finally:
        store.close()


async def _stream_until_killed(stub: profile_pb2_grpc.ProfileServiceStub, acked: dict[str, int], worker: int,
                               iteration: int, rng: random.Random) -> None:
    n = 0
    try:
        while True:
            if rng.random() < 0.3:
                n += 1
                eid = f"i{iteration}-w{worker}-{n}"
                answer = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user=f"u{n % 9}", event_id=eid)),
                                          timeout=5)
                acked[eid] = answer.seq
                continue
            batch = []
            for _ in range(rng.randrange(5, 80)):
                n += 1
                batch.append(ev(ET.PRODUCT_VIEW, user=f"u{n % 9}", event_id=f"i{iteration}-w{worker}-{n}"))
            summary = await stub.TrackStream(iter(batch), timeout=5)
            assert summary.accepted == len(batch)
            acked.update({e.event_id: 0 for e in batch})  # seq unknown: TrackStream answers a summary
    except grpc.aio.AioRpcError:
        return  # the server was killed


async def test_sigkill_keeps_every_acknowledged_event_in_the_feed_exactly_once(tmp_path: Path) -> None:
    """SIGKILL the service (its writer process dies with it) while clients stream; after each
    restart the feed from 0 serves every acknowledged event exactly once, in seq order, each
    Track-acknowledged one at the seq it was answered with, and new seqs continue past the old."""
    rng = random.Random(20261203)
    acked: dict[str, int] = {}
    iterations = 3
    last_seq = 0
    for iteration in range(iterations + 1):
        async with serving_process(tmp_path) as (proc, stub):
            probe = await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW, user="probe",
                                                              event_id=f"probe{iteration}")), timeout=10)
            assert probe.seq > last_seq
            acked[f"probe{iteration}"] = probe.seq
            feed = []
            async for item in stub.FollowEvents(pb.FollowEventsRequest(max_batch=500), timeout=30):
                feed.append(item)
                if item.seq == probe.seq:
                    break
            assert all(a.seq < b.seq for a, b in itertools.pairwise(feed))
            ids = [i.event.event_id for i in feed]
            assert len(set(ids)) == len(ids), "an event is in the feed twice"
            seq_of = {i.event.event_id: i.seq for i in feed}
            missing = [eid for eid in acked if eid not in seq_of]
            assert not missing, f"{len(missing)} acknowledged events are not in the feed, e.g. {missing[:3]}"
            wrong = [eid for eid, seq in acked.items() if seq and seq_of[eid] != seq]
            assert not wrong, f"Track answered another seq than the feed shows: {wrong[:3]}"
            last_seq = probe.seq
            if iteration == iterations:
                break
            workers = [asyncio.create_task(_stream_until_killed(stub, acked, w, iteration, rng))
                       for w in range(3)]
            # let load build up; the kill lands anywhere
            await sigkill_under_load(proc, workers, rng.uniform(0.3, 0.6), TIMEOUT)
    assert len(acked) > iterations * 20, f"too few events were acknowledged ({len(acked)}) to mean anything"


async def test_batched_feed_has_the_same_items_grouped(profiles: Profiles) -> None:
    stub = profiles.stub
    events = [ev(ET.PAGE_VIEW, user=f"u{i % 3}", event_id=f"g{i}") for i in range(250)]
    await stub.TrackBatch(pb.TrackBatchRequest(events=events), timeout=10)
    await stub.Identify(pb.IdentifyRequest(anonymous_id="u0", customer_id="c0"), timeout=10)
    plain = await take(stub, 0, 251)
    call = stub.FollowEventBatches(pb.FollowEventsRequest(from_seq=0, max_batch=100))
    batches: list[pb.LoggedEventBatch] = []
    try:
        async def run() -> None:
            async for batch in call:
                batches.append(batch)
                if sum(len(b.items) for b in batches) >= 251:
                    return
        await asyncio.wait_for(run(), TIMEOUT)
    finally:
        call.cancel()
    assert [len(b.items) for b in batches] == [100, 100, 51]
    assert [i for b in batches for i in b.items] == plain
    err = await assert_status(_first_batch(stub, plain[-1].seq + 2), grpc.StatusCode.OUT_OF_RANGE)
    assert "beyond the head" in (err.details() or "")


async def _first_batch(stub: profile_pb2_grpc.ProfileServiceStub, from_seq: int) -> None:
    async for _ in stub.FollowEventBatches(pb.FollowEventsRequest(from_seq=from_seq), timeout=10):
        return
