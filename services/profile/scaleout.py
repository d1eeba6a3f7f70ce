"""The profile service in scale-out mode (`--event-log nats://...`): JetStream is the system of record.

Writes go to the stream and are answered after JetStream's acknowledgement (Track carries the
position); this shard's `ShardConsumer` folds the partitions it owns into the local LMDB, which
the (unchanged) `ProfileEngine` reads. So a read sees what the shard has applied, and
`GetProfile(min_seq=...)` waits, bounded by READ_WAIT_SECONDS, for a Track's position.

What goes through the log: events (Track, TrackBatch, TrackStream) and erasure
(DeleteProfile = `log.erase`: an Erasure item, then the shopper's subject is purged). Not yet:
Identify, SetConsent, ImportProfile and PutAlias change only one shard's LMDB and would be lost
on a rebuild, so this mode refuses them with FAILED_PRECONDITION rather than accept a write it
cannot keep (Identify across partitions needs an Identity item on both partitions: to do).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import NoReturn

import nats.errors
import nats.js.errors

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.eventlog import config as EC
from services.eventlog.jetstream import JetStreamLog, JetStreamSettings
from services.eventlog.partitions import owned_partitions
from services.eventlog.shard import ScaleOutTrack, ShardConsumer
from services.profile import config as C
from services.profile.engine import ProfileEngine, StreamSummary
from services.profile.store import DeleteResult
from services.profile.validation import check_id
from vitrine.v1 import common_pb2, profile_pb2

NOT_IN_SCALE_OUT = ("{op} is not available in scale-out mode (--event-log) yet: it would change only this "
                    "shard's state store, which is rebuilt from the event stream; use the embedded mode")


def parse_servers(event_log: str) -> tuple[str, ...]:
    servers = tuple(s.strip() for s in event_log.split(",") if s.strip())
    bad = [s for s in servers if not s.startswith(("nats://", "tls://"))]
    if not servers or bad:
        raise ValueError(f"--event-log {event_log!r}: expected nats://host:port[,nats://host:port...]")
    return servers


class ScaleOutProfile:
    """One profile shard: the stream writer, the consumer of its partitions, reads on its LMDB."""

    def __init__(self, engine: ProfileEngine, settings: JetStreamSettings, *, shard_index: int,
                 shard_count: int, read_wait_seconds: float = EC.READ_WAIT_SECONDS) -> None:
        self.engine = engine
        self.settings = settings
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.partitions = owned_partitions(shard_index, shard_count, settings.partitions)
        self.read_wait_seconds = read_wait_seconds
        self.log: JetStreamLog | None = None
        self.consumer: ShardConsumer | None = None
        self.writer: ScaleOutTrack | None = None

    async def start(self) -> None:
        """After engine.start() (the consumer folds into the engine's store)."""
        self.log = await JetStreamLog.connect(self.settings)
        self.writer = ScaleOutTrack(self.log, retention_days=self.engine.retention_days, clock=self.engine.clock)
        self.consumer = ShardConsumer(self.log, self.engine.store, self.partitions, clock=self.engine.clock,
                                      owner=f"s{self.shard_index}of{self.shard_count}")
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.log is not None:
            await self.log.close()

    def _parts(self) -> tuple[JetStreamLog, ScaleOutTrack, ShardConsumer]:
        if self.log is None or self.writer is None or self.consumer is None:
            raise Unavailable("the profile shard is starting")
        return self.log, self.writer, self.consumer

    def _partition(self, user_id: str) -> int:
        return self._parts()[0].partition_of(user_id)

    def _check_owner(self, user_id: str) -> int:
        partition = self._partition(user_id)
        owner = partition % self.shard_count
        if owner != self.shard_index:
            raise FailedPrecondition(f"user_id {user_id!r} is in partition {partition}, owned by shard {owner}, "
                                     f"not this shard {self.shard_index}: route by partition (gateway with "
                                     "VITRINE_EVENT_LOG set)")
        return partition

    # ------------------------------------------------------------------------------ writes
    async def track(self, event: common_pb2.Event) -> profile_pb2.TrackResponse:
        seq, applied = (await self._acked([event]))[0]
        return profile_pb2.TrackResponse(applied=applied, user_id=event.user_id, seq=seq)

    async def track_batch(self, events: Sequence[common_pb2.Event]) -> StreamSummary:
        if len(events) > C.MAX_TRACK_BATCH:
            raise InvalidArgument(f"events: {len(events)} events in one TrackBatch; at most {C.MAX_TRACK_BATCH} "
                                  "are allowed (split the batch)")
        summary = StreamSummary()
        good = [e for i, e in enumerate(events) if self.engine.accept(e, i, summary)]
        await self._append(good, summary)
        return summary

    async def track_stream(self, events: AsyncIterable[common_pb2.Event]) -> StreamSummary:
        summary = StreamSummary()
        chunk: list[common_pb2.Event] = []
        index = -1
        async for event in events:
            index += 1
            if self.engine.accept(event, index, summary):
                chunk.append(event)
            if len(chunk) >= C.STREAM_CHUNK_EVENTS:
                await self._append(chunk, summary)
                chunk = []
        await self._append(chunk, summary)
        return summary

    async def _acked(self, events: Sequence[common_pb2.Event]) -> list[tuple[int, bool]]:
        """(seq, applied) per event once JetStream acknowledged them; a log that does not answer
        (a NATS node lost, a leader election) is UNAVAILABLE: safe to retry, event_id de-duplicates."""
        try:
            return await self._parts()[1].track_batch(events)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the event log did not acknowledge the events ({type(exc).__name__}: {exc}); "
                              "retry: the same event_id is stored once") from exc

    async def _append(self, events: Sequence[common_pb2.Event], summary: StreamSummary) -> None:
        if not events:
            return
        for _, applied in await self._acked(events):
            if applied:
                summary.accepted += 1
            else:
                summary.duplicates += 1

    async def delete(self, user_id: str) -> DeleteResult:
        """Erasure through the log; answers once this (owning) shard has applied it."""
        check_id(user_id, "user_id")
        partition = self._check_owner(user_id)
        log, _, consumer = self._parts()
        existed = self.engine.store.get(user_id) is not None
        seq = await log.erase([user_id], self.engine.clock())
        if not await consumer.wait_applied(partition, seq, self.read_wait_seconds):
            raise Unavailable(f"erasure of {user_id!r} is in the log (seq {seq}) but not yet applied by this "
                              "shard; retry DeleteProfile (it is idempotent)")
        return DeleteResult(deleted=existed, events_deleted=0, aliases_deleted=0)

    def refuse(self, op: str) -> NoReturn:
        raise FailedPrecondition(NOT_IN_SCALE_OUT.format(op=op))

    # ------------------------------------------------------------------------------- reads
    async def get_profile(self, user_id: str, min_seq: int) -> common_pb2.Profile:
        check_id(user_id, "user_id")
        partition = self._check_owner(user_id)
        if min_seq > 0 and not await self._parts()[2].wait_applied(partition, min_seq, self.read_wait_seconds):
            raise Unavailable(f"this shard has not yet applied seq {min_seq} of partition {partition} "
                              f"(waited {self.read_wait_seconds:g} s); retry")
        return self.engine.get_profile(user_id)

    async def follow_event_batches(self, from_seq: int) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        """What FollowEvents serves on this shard: the stream's items of the partitions it owns, in
        stream order, from `from_seq` (a stream seq). Downstream consumers follow every shard, as
        embedded, so each item reaches them once while the shard count is fixed (a reshard gives a
        new shard's feed the moved partitions from its cursor: see README)."""
        async for items in self._parts()[0].follow(max(from_seq, 0), owned=self.partitions):
            yield items
