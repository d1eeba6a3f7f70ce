"""The shared feed follower: unit checks, then real servers (the profile service's FollowEvents,
and a RecommendService FollowCatalog stand-in), including a server restart mid-stream."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest

from services.common.channel import open_channel
from services.common.follow import Backoff, FatalFollowError, Follower, LmdbCursor, MemoryCursor
from services.common.server import RunningServer, build_server
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from tests.profile.helpers import ET, ev
from vitrine.v1 import profile_pb2, profile_pb2_grpc, recommend_pb2, recommend_pb2_grpc

pb = profile_pb2
TIMEOUT = 20.0
FAST = Backoff(initial=0.01, maximum=0.2)


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, base in [(0, 0.1), (1, 0.2), (3, 0.8), (10, 5.0), (1000, 5.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3  # spread out, not in lockstep


def test_exactly_one_handler_is_required() -> None:
    with pytest.raises(ValueError):
        Follower("x", lambda seq: None, MemoryCursor())
    with pytest.raises(ValueError):
        Follower("x", lambda seq: None, MemoryCursor(), on_item=print, on_batch=print)


# ------------------------------------------------------------------------ the profile feed
def profile_service(data_dir: Path, port: int = 0, writer_process: bool = False) -> ProfileService:
    return ProfileService(ProfileConfig(port=port, data_dir=str(data_dir), purge_interval_seconds=0.0,
                                        writer_process=writer_process))


async def start(service: ProfileService) -> RunningServer:
    return await build_server(service.config, service)


@dataclasses.dataclass
class Recorder:
    """A consumer: records what it was handed; optionally held at a gate or failing once."""

    items: list[pb.LoggedEvent] = dataclasses.field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    fail_at_seq: int = 0

    async def __call__(self, batch: Sequence[pb.LoggedEvent]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_at_seq and any(i.seq == self.fail_at_seq for i in batch):
            self.fail_at_seq = 0
            raise RuntimeError("a consumer hiccup")
        self.items.extend(batch)

    @property
    def ids(self) -> list[str]:
        return [i.event.event_id for i in self.items]


def follower_of(address: str, cursor: MemoryCursor | LmdbCursor, handler: Recorder, batched: bool = False,
                **kw: object) -> tuple[Follower[pb.LoggedEvent], grpc.aio.Channel]:
    channel = open_channel(address)
    stub = profile_pb2_grpc.ProfileServiceStub(channel)
    if batched:  # the same feed, items grouped per message
        kw["items_of"] = lambda batch: batch.items
        method = stub.FollowEventBatches
    else:
        method = stub.FollowEvents
    follower: Follower[pb.LoggedEvent] = Follower(
        "test-events", lambda seq: method(pb.FollowEventsRequest(from_seq=seq, max_batch=50)),
        cursor, on_batch=handler, backoff=FAST, rng=random.Random(1),
        time_of=lambda item: item.event.timestamp_ms, **kw)  # type: ignore[arg-type]
    return follower, channel


async def track(address: str, events: list) -> int:  # type: ignore[type-arg]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        summary = await stub.TrackStream(iter(events), timeout=TIMEOUT)
        assert summary.accepted == len(events), summary
        tail = ev(ET.PAGE_VIEW, user="tail", event_id=f"tail-{events[0].event_id}")
        last = await stub.Track(pb.TrackRequest(event=tail), timeout=TIMEOUT)
        return last.seq


async def follow_to(follower: Follower[Any], channel: grpc.aio.Channel, cursor: int) -> None:
    """Run `follower` until it has applied every item below `cursor`; then stop it and close its channel."""
    follower.start()
    try:
        await asyncio.wait_for(follower.wait_for_cursor(cursor), TIMEOUT)
    finally:
        await follower.stop()
        await channel.close()


async def test_follows_history_then_live_in_order(tmp_path: Path) -> None:
    running = await start(profile_service(tmp_path))
    try:
        await track(running.address, [ev(ET.PAGE_VIEW, user=f"u{i % 4}", event_id=f"h{i}") for i in range(120)])
        recorder = Recorder()
        follower, channel = follower_of(running.address, MemoryCursor(), recorder, max_batch=32)
        follower.start()
        try:
            await asyncio.wait_for(follower.wait_for_cursor(122), TIMEOUT)
            head = await track(running.address, [ev(ET.ADD_TO_CART, event_id=f"live{i}") for i in range(30)])
            await asyncio.wait_for(follower.wait_for_cursor(head + 1), TIMEOUT)
        finally:
            await follower.stop()
            await channel.close()
        assert recorder.ids == ([f"h{i}" for i in range(120)] + ["tail-h0"]
                                + [f"live{i}" for i in range(30)] + ["tail-live0"])
        assert follower.stats.items == len(recorder.items) and follower.stats.connected is False
        assert follower.stats.reconnects == 0 and follower.stats.lag_seconds < 3600
    finally:
        await running.stop(0)


@pytest.mark.parametrize(("writer_process", "batched"), [(False, False), (True, False), (False, True)],
                         ids=["in-process", "writer-process", "batched-feed"])
async def test_server_restart_mid_stream_loses_and_repeats_nothing(tmp_path: Path, writer_process: bool,
                                                                   batched: bool) -> None:
    running = await start(profile_service(tmp_path, writer_process=writer_process))
    port = running.port
    first = [ev(ET.PRODUCT_VIEW, user=f"u{i % 5}", event_id=f"a{i}") for i in range(400)]
    await track(running.address, first)
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    follower, channel = follower_of(running.address, MemoryCursor(), recorder, batched, max_batch=50, buffer=60)
    follower.start()
    try:
        await asyncio.wait_for(recorder.entered.wait(), TIMEOUT)  # mid-stream: a batch is in the handler
        await running.stop(0)                                     # the server goes away under it
        gate.set()
        running = await start(profile_service(tmp_path, port=port, writer_process=writer_process))
        head = await track(running.address, [ev(ET.PAGE_VIEW, user="b", event_id=f"b{i}") for i in range(100)])
        await asyncio.wait_for(follower.wait_for_cursor(head + 1), TIMEOUT)
    finally:
        await follower.stop()
        await channel.close()
        await running.stop(0)
    expected = [f"a{i}" for i in range(400)] + ["tail-a0"] + [f"b{i}" for i in range(100)] + ["tail-b0"]
    assert recorder.ids == expected
    assert follower.stats.reconnects >= 1
    assert follower.stats.batches < len(expected)  # items that queued up behind the held handler came in batches


async def test_a_failing_handler_gets_the_batch_again(tmp_path: Path) -> None:
    running = await start(profile_service(tmp_path))
    try:
        head = await track(running.address, [ev(ET.PAGE_VIEW, event_id=f"e{i}") for i in range(60)])
        recorder = Recorder(fail_at_seq=30)
        follower, channel = follower_of(running.address, MemoryCursor(), recorder, max_batch=7)
        await follow_to(follower, channel, head + 1)
        assert recorder.ids == [f"e{i}" for i in range(60)] + ["tail-e0"]
        assert follower.stats.handler_errors == 1 and follower.stats.reconnects == 1
    finally:
        await running.stop(0)


async def test_lmdb_cursor_resumes_exactly_once_after_a_restart_of_the_consumer(tmp_path: Path) -> None:
    running = await start(profile_service(tmp_path / "server"))
    env = lmdb.open(str(tmp_path / "consumer"), max_dbs=2)
    db = env.open_db(b"state")
    cursor = LmdbCursor(env, db, b"cursor:events")
    seen: list[str] = []

    def apply(batch: Sequence[pb.LoggedEvent]) -> None:
        with env.begin(write=True) as txn:  # the consumer's state and its cursor in one transaction
            for item in batch:
                txn.put(f"seen:{item.seq:012d}".encode(), item.event.event_id.encode(), db=db)
            cursor.put(txn, batch[-1].seq + 1)
        seen.extend(i.event.event_id for i in batch)

    try:
        head = await track(running.address, [ev(ET.PAGE_VIEW, event_id=f"x{i}") for i in range(50)])
        for round_ in range(2):
            channel = open_channel(running.address)
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            follower: Follower[pb.LoggedEvent] = Follower(
                "test-lmdb", lambda seq, s=stub: s.FollowEvents(pb.FollowEventsRequest(from_seq=seq)),
                cursor, on_batch=apply, backoff=FAST)
            await follow_to(follower, channel, head + 1)
            if round_ == 0:
                head = await track(running.address, [ev(ET.PAGE_VIEW, event_id=f"y{i}") for i in range(20)])
        assert seen == [f"x{i}" for i in range(50)] + ["tail-x0"] + [f"y{i}" for i in range(20)] + ["tail-y0"]
        with env.begin(db=db) as txn:
            assert txn.stat(db)["entries"] == len(seen) + 1
        assert cursor.load() == head + 1
    finally:
        env.close()
        await running.stop(0)


async def test_a_cursor_the_server_rejects_stops_the_follower(tmp_path: Path) -> None:
    running = await start(profile_service(tmp_path))
    try:
        follower, channel = follower_of(running.address, MemoryCursor(1000), Recorder())
        try:
            with pytest.raises(FatalFollowError) as info:
                await asyncio.wait_for(follower.run(), TIMEOUT)
            assert info.value.code == grpc.StatusCode.OUT_OF_RANGE
        finally:
            await channel.close()
    finally:
        await running.stop(0)


async def test_stop_is_prompt_while_the_server_is_down(tmp_path: Path) -> None:
    running = await start(profile_service(tmp_path))
    address = running.address
    await running.stop(0)
    follower, channel = follower_of(address, MemoryCursor(), Recorder())
    task = follower.start()
    try:
        await asyncio.wait_for(follower.stop(), TIMEOUT)
        assert task.done()
    finally:
        await channel.close()


# --------------------------------------------------------- a second feed type: FollowCatalog
class CatalogFeed(recommend_pb2_grpc.RecommendServiceServicer):
    """A stand-in RecommendService that serves FollowCatalog from a list (it is not the
    recommendation service under test here, only a second message type for the follower)."""

    def __init__(self, changes: list[recommend_pb2.CatalogChange]) -> None:
        self.changes = changes
        self.grown = asyncio.Event()

    async def FollowCatalog(self, request: recommend_pb2.FollowCatalogRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[recommend_pb2.CatalogChange]:
        i = 0
        while True:
            grown = self.grown
            while i < len(self.changes):
                change = self.changes[i]
                i += 1
                if change.seq >= request.from_seq:
                    yield change
            await grown.wait()


async def test_follows_catalog_changes_with_the_same_follower() -> None:
    changes = [recommend_pb2.CatalogChange(seq=s, product_id=f"p{s}", stock=s) for s in range(1, 11)]
    feed = CatalogFeed(changes)
    server = grpc.aio.server()
    recommend_pb2_grpc.add_RecommendServiceServicer_to_server(feed, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}")
    stub = recommend_pb2_grpc.RecommendServiceStub(channel)
    got: list[recommend_pb2.CatalogChange] = []
    follower: Follower[recommend_pb2.CatalogChange] = Follower(
        "test-catalog", lambda seq: stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=seq)),
        MemoryCursor(4), on_item=got.append, backoff=FAST)
    follower.start()
    try:
        await asyncio.wait_for(follower.wait_for_cursor(11), TIMEOUT)
        changes.append(recommend_pb2.CatalogChange(seq=12, product_id="p12"))  # a gap in seqs is fine
        feed.grown.set()
        feed.grown = asyncio.Event()
        await asyncio.wait_for(follower.wait_for_cursor(13), TIMEOUT)
    finally:
        await follower.stop()
        await channel.close()
        await server.stop(0)
    assert [c.seq for c in got] == [4, 5, 6, 7, 8, 9, 10, 12]
