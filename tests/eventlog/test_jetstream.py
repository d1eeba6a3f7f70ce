"""JetStreamLog against a real nats-server: acknowledged appends, de-duplication by event_id,
order, partitions, erasure by purge of the shopper's subject."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.eventlog.jetstream import JetStreamLog, JetStreamSettings
from tests.eventlog.helpers import event, logged
from vitrine.nats_server import NatsNode
from vitrine.v1 import profile_pb2

WAIT = 10.0


async def take(follow: AsyncIterator[list[profile_pb2.LoggedEvent]], n: int) -> list[profile_pb2.LoggedEvent]:
    out: list[profile_pb2.LoggedEvent] = []
    while len(out) < n:
        out.extend(await follow.__anext__())
    return out


async def test_append_is_acknowledged_in_order_and_deduplicated(nats_node: NatsNode) -> None:
    log = await JetStreamLog.connect(JetStreamSettings(servers=(nats_node.url,), partitions=4))
    try:
        items = [logged(event(i)) for i in range(20)]
        appended = await log.append(items)
        assert [a.seq for a in appended] == list(range(1, 21)) and not any(a.duplicate for a in appended)
        again = await log.append(items[3:5])  # a retried Track: same event_ids
        assert [(a.seq, a.duplicate) for a in again] == [(4, True), (5, True)]
        assert await log.head() == 20
        follow = log.follow(0)
        got = await take(follow, 20)
        await follow.aclose()
        assert [g.seq for g in got] == list(range(1, 21))
        assert [g.event.event_id for g in got] == [i.event.event_id for i in items]
        # A partition is the ordered sub-log of its shoppers.
        p = log.partition_of("shopper-0")
        follow = log.follow(0, partition=p)
        mine = [i for i in items if log.partition_of(i.canonical_user_id) == p]
        got = await take(follow, len(mine))
        await follow.aclose()
        assert [g.event.event_id for g in got] == [i.event.event_id for i in mine]
        # From a cursor.
        follow = log.follow(15)
        assert [g.seq for g in await take(follow, 6)] == [15, 16, 17, 18, 19, 20]
        await follow.aclose()
    finally:
        await log.close()


async def test_erasure_is_an_item_and_purges_the_shoppers_messages(nats_node: NatsNode) -> None:
    log = await JetStreamLog.connect(JetStreamSettings(servers=(nats_node.url,), partitions=4))
    try:
        await log.append([logged(event(i)) for i in range(14)])
        erased_at = await log.erase(["shopper-3"], 123)
        follow = log.follow(0)
        got = await take(follow, 13)  # 14 events, 2 of shopper-3 gone, + the Erasure
        await follow.aclose()
        assert not [g for g in got if g.WhichOneof("item") == "event" and g.event.user_id == "shopper-3"]
        assert got[-1].seq == erased_at and got[-1].erasure.user_id == "shopper-3"
        assert got[-1].erasure.erased_ms == 123
    finally:
        await log.close()
