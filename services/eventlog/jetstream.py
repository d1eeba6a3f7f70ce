"""The event log in NATS JetStream (nats-py): the system of record beyond one machine.

One stream (`VITRINE_EVENTS`) over `vitrine.events.>`; a shopper's items go to their own subject
inside their partition (see partitions.py), so a partition is an ordered sub-log that one shard
consumes, and erasure can purge one shopper's subject. Each item is a serialized `LoggedEvent`
(without seq: the stream sequence is its position). `Nats-Msg-Id` = `<canonical id>/<event_id>`
(the profile service's idempotency key), so a retried Track within the duplicate window is
stored once. `append` returns only after JetStream's acknowledgement, which with R=3 means a
majority of the replicas have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Collection, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from services.eventlog import config as C
from services.eventlog.metrics import HOLES
from services.eventlog.partitions import erasure_subject, partition_filter, partition_of, user_subject
from services.eventlog.protocol import Appended
from vitrine.v1 import profile_pb2

DAY_SECONDS = 86_400.0

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JetStreamSettings:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = C.STREAM_NAME
    prefix: str = C.SUBJECT_PREFIX
    partitions: int = C.DEFAULT_PARTITIONS
    replicas: int = C.DEFAULT_REPLICAS
    duplicate_window_seconds: float = C.DUPLICATE_WINDOW_SECONDS
    max_age_days: int = C.MAX_AGE_DAYS
    publish_timeout_seconds: float = C.PUBLISH_TIMEOUT_SECONDS


def msg_id(item: profile_pb2.LoggedEvent) -> str:
    return f"{item.canonical_user_id}/{item.event.event_id}"


def decode(raw: bytes, seq: int) -> profile_pb2.LoggedEvent:
    item = profile_pb2.LoggedEvent.FromString(raw)
    item.seq = seq
    return item


class JetStreamLog:
    """EventLog on JetStream. Create with `await JetStreamLog.connect(settings)`."""

    def __init__(self, settings: JetStreamSettings, nc: Client, js: JetStreamContext) -> None:
        self.settings = settings
        self.nc = nc
        self.js = js

    @classmethod
    async def connect(cls, settings: JetStreamSettings) -> JetStreamLog:
        nc = await nats.connect(servers=list(settings.servers), max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        log = cls(settings, nc, nc.jetstream(timeout=settings.publish_timeout_seconds))
        await log.ensure_stream()
        return log

    def stream_config(self) -> StreamConfig:
        s = self.settings
        return StreamConfig(
            name=s.stream, subjects=[f"{s.prefix}.>"], storage=StorageType.FILE, num_replicas=s.replicas,
            duplicate_window=s.duplicate_window_seconds, max_age=s.max_age_days * DAY_SECONDS,
        )

    async def ensure_stream(self, wait_s: float = C.START_WAIT_SECONDS) -> None:
        """Create the stream, or bring an existing one to these settings (idempotent). Retried for
        up to `wait_s`: right after a NATS node is lost the cluster may be electing a new
        (meta or stream) leader and answers nothing for a few seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                await self._ensure_stream()
                return
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, TimeoutError):
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(C.RETRY_SECONDS)

    async def _ensure_stream(self) -> None:
        config = self.stream_config()
        try:
            info = await self.js.stream_info(self.settings.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
            return
        have = info.config
        if (have.subjects, have.num_replicas, have.duplicate_window, have.max_age) != (
                config.subjects, config.num_replicas, config.duplicate_window, config.max_age):
            await self.js.update_stream(config)

    def partition_of(self, user_id: str) -> int:
        return partition_of(user_id, self.settings.partitions)

    async def append(self, items: Sequence[profile_pb2.LoggedEvent]) -> list[Appended]:
        for item in items:
            if item.WhichOneof("item") != "event" or not item.canonical_user_id or not item.event.event_id:
                raise ValueError("append takes event items with canonical_user_id and event.event_id set")
        s = self.settings
        acks = await asyncio.gather(*(
            self.js.publish(user_subject(item.canonical_user_id, s.partitions, s.prefix), item.SerializeToString(),
                            timeout=s.publish_timeout_seconds, stream=s.stream, headers={"Nats-Msg-Id": msg_id(item)})
            for item in items))
        return [Appended(ack.seq, bool(ack.duplicate)) for ack in acks]

    async def erase(self, user_ids: Sequence[str], erased_ms: int) -> int:
        """Append the Erasure to the partition's erasure subject (so the owning shard and every
        consumer see it in order), then purge each id's own subject: the stream keeps no
        message of the shopper, only the Erasure that names them."""
        s = self.settings
        canonical = user_ids[0]
        item = profile_pb2.LoggedEvent(canonical_user_id=canonical)
        item.erasure.user_id = canonical
        item.erasure.aliases.extend(user_ids[1:])
        item.erasure.erased_ms = erased_ms
        ack = await self.js.publish(erasure_subject(self.partition_of(canonical), s.prefix), item.SerializeToString(),
                                    timeout=s.publish_timeout_seconds, stream=s.stream)
        for user_id in user_ids:
            await self.js.purge_stream(s.stream, subject=user_subject(user_id, s.partitions, s.prefix))
        return int(ack.seq)

    async def head(self) -> int:
        info = await self.js.stream_info(self.settings.stream)
        return int(info.state.last_seq)

    async def follow(self, from_seq: int, partition: int | None = None, batch: int = C.FETCH_BATCH,
                     owned: Collection[int] | None = None) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        """An ephemeral pull consumer from `from_seq` (no acks: the reader keeps its cursor).
        `owned`: only items of these partitions, in stream order (filtered here by the subject's
        partition token: nats-server 2.9 has no multi-subject filter, and one consumer keeps the
        stream order, so the reader's cursor stays a stream seq)."""
        s = self.settings
        subject = f"{s.prefix}.>" if partition is None else partition_filter(partition, s.prefix)
        wanted = None if owned is None else {str(p) for p in owned}
        start = len(s.prefix) + 1
        next_seq = from_seq
        while True:
            sub = await self.js.pull_subscribe(subject, stream=s.stream, config=consumer_config(next_seq, subject))
            order = DeliveryOrder()
            try:
                hole = False
                while not hole:
                    msgs, hole = order.admit(await fetch(sub, batch))
                    if not msgs:
                        continue
                    next_seq = msgs[-1].metadata.sequence.stream + 1
                    if wanted is not None:
                        msgs = [m for m in msgs if m.subject[start:].split(".", 1)[0] in wanted]
                    if msgs:
                        yield [decode(m.data, m.metadata.sequence.stream) for m in msgs]
            finally:
                with contextlib.suppress(Exception):  # the connection may be the thing that failed
                    await sub.unsubscribe()
            HOLES.labels("follow").inc()
            log.warning("follow: deliveries from stream seq %d were lost in transit; consumer re-created there",
                        next_seq)

    async def close(self) -> None:
        await self.nc.drain()


def consumer_config(from_seq: int, subject: str, durable: str | None = None) -> ConsumerConfig:
    from_start = from_seq <= 1
    return ConsumerConfig(durable_name=durable, filter_subject=subject,
                          deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.BY_START_SEQUENCE,
                          opt_start_seq=None if from_start else from_seq,
                          ack_policy=AckPolicy.EXPLICIT if durable else AckPolicy.NONE)


class DeliveryOrder:
    """Whether a consumer's deliveries reached us without a hole.

    A consumer numbers what it delivers (the consumer sequence, from 1). A fetch answer lost with
    a NATS node or a connection leaves a hole in those numbers: the next answer starts past it.
    Without this check the hole would be silent: an ack-none consumer never sends those messages
    again, and an explicit-ack one redelivers them only after its ack wait, behind later messages
    already applied. `admit` keeps the messages before the first hole; on a hole the reader
    re-creates its consumer after the last item it handled (a new consumer counts from 1 again)."""

    def __init__(self) -> None:
        self.next_delivery = 1

    def admit(self, msgs: Sequence[Msg]) -> tuple[list[Msg], bool]:
        """(the messages in order up to the first hole, whether there was a hole)."""
        kept: list[Msg] = []
        for m in msgs:
            delivered = m.metadata.sequence.consumer
            if delivered > self.next_delivery:
                return kept, True
            if delivered == self.next_delivery:
                self.next_delivery += 1
                kept.append(m)
            # below: a redelivery of a message already received (its ack was lost); dropped
        return kept, False


async def fetch(sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """Up to `batch` messages; [] when none came within FETCH_WAIT_SECONDS (the long poll of a
    pull consumer: the server answers as soon as messages arrive)."""
    try:
        return await sub.fetch(batch, timeout=C.FETCH_WAIT_SECONDS)
    except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
        return []
