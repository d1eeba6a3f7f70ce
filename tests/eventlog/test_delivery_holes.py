"""A fetch answer lost in transit (a NATS node killed while it was on the wire) leaves a hole in
the consumer's delivery numbers. Here the answer is really fetched from a real nats-server and
then dropped on the client side, which is exactly what the shard or follower sees when it is lost:
the shard must still apply every event once, in order, and a follower must still yield each item
once. Without the hole check the shard applied the later events and then discarded the lost ones
when JetStream redelivered them (they looked like redeliveries of what it had applied)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

import services.eventlog.jetstream
import services.eventlog.shard
from services.eventlog.jetstream import DeliveryOrder, JetStreamLog, JetStreamSettings
from services.eventlog.metrics import HOLES
from services.eventlog.shard import ScaleOutTrack, ShardConsumer
from services.profile.store import LmdbProfileStore
from tests.eventlog.helpers import event, logged, open_store, profiles
from vitrine.nats_server import NatsNode

PARTITIONS = 2
WAIT = 20.0


class Delivered:
    """A stand-in for a Msg's metadata, for the unit test of DeliveryOrder."""

    def __init__(self, consumer_seq: int) -> None:
        self.metadata = type("M", (), {"sequence": type("S", (), {"consumer": consumer_seq})()})()


def test_delivery_order_keeps_messages_up_to_the_first_hole() -> None:
    order = DeliveryOrder()
    msgs: list[Any] = [Delivered(n) for n in (1, 2, 3)]
    assert order.admit(msgs) == (msgs, False)
    again: list[Any] = [Delivered(3), Delivered(4)]  # 3 redelivered (its ack was lost), then 4
    assert order.admit(again) == ([again[1]], False)
    holed: list[Any] = [Delivered(5), Delivered(7), Delivered(8)]  # 6 never arrived
    assert order.admit(holed) == ([holed[0]], True)


def dropping_first_answers(real: Any, drop: int) -> tuple[Any, list[int]]:
    """A fetch that loses its first `drop` non-empty answers (really fetched, never handed on)."""
    lost: list[int] = []

    async def fetch(sub: Any, batch: int) -> list[Msg]:
        msgs: list[Msg] = await real(sub, batch)
        if msgs and len(lost) < drop:
            lost.append(len(msgs))
            return []
        return msgs

    return fetch, lost


@pytest.fixture
async def log(nats_node: NatsNode) -> AsyncIterator[JetStreamLog]:
    log = await JetStreamLog.connect(JetStreamSettings(servers=(nats_node.url,), partitions=PARTITIONS))
    yield log
    await log.close()


def holes(reader: str) -> float:
    return HOLES.labels(reader)._value.get()


async def test_a_shard_applies_what_a_lost_fetch_answer_held(log: JetStreamLog, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fetch, lost = dropping_first_answers(services.eventlog.shard.fetch, drop=1)
    monkeypatch.setattr(services.eventlog.shard, "fetch", fetch)
    before = holes("shard")
    shard = ShardConsumer(log, open_store(tmp_path / "shard"), list(range(PARTITIONS)))
    await shard.start()
    track = ScaleOutTrack(log, retention_days=400)
    try:
        first = [event(i) for i in range(30)]
        await track.track_batch(first)
        for _ in range(int(WAIT / 0.05)):  # until the shard's first answer was fetched and lost
            if lost:
                break
            await asyncio.sleep(0.05)
        later = [event(i) for i in range(30, 60)]  # a second answer on every partition after the lost one
        seqs = [(e.user_id, seq) for e, (seq, _) in zip(later, await track.track_batch(later), strict=True)]
        assert len(lost) == 1 and lost[0] > 0
        last = {log.partition_of(u): s for u, s in seqs}
        for p, seq in last.items():
            assert await shard.wait_applied(p, seq, wait_s=WAIT), f"partition {p} stopped before seq {seq}"
        reference = LmdbProfileStore(tmp_path / "reference", map_size_mb=64)
        try:
            reference.apply_events(first + later, 0)
            assert profiles(shard.store) == profiles(reference), "an event of the lost answer was never applied"
        finally:
            reference.close()
        assert shard.items_applied == 60  # each once
        assert holes("shard") == before + 1
    finally:
        await shard.stop()
        shard.store.close()


async def test_a_follower_yields_what_a_lost_fetch_answer_held(log: JetStreamLog,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fetch, lost = dropping_first_answers(services.eventlog.jetstream.fetch, drop=2)
    monkeypatch.setattr(services.eventlog.jetstream, "fetch", fetch)
    before = holes("follow")
    await log.append([logged(event(i)) for i in range(20)])
    follow = log.follow(0, batch=5)
    seen: list[int] = []
    try:
        for count in itertools.count():
            async with asyncio.timeout(WAIT):
                seen += [item.seq for item in await follow.__anext__()]
            if count == 0:  # more after the first answer that got through
                await log.append([logged(event(i)) for i in range(20, 40)])
            if len(seen) >= 40:
                break
    finally:
        await follow.aclose()
    assert len(lost) == 2
    assert seen == list(range(1, 41)), "an item was skipped or repeated"
    assert holes("follow") >= before + 1
