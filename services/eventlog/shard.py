"""A profile shard in scale-out mode: its LMDB is a state store rebuilt from the JetStream log.

`ShardConsumer` consumes each partition it owns with a durable pull consumer (`shard-p<N>`), in
order, and folds each fetched batch into the shard's `LmdbProfileStore` in **one** LMDB
transaction that also stores the partition's cursor (the stream seq of the last item applied,
meta key `stream:<N>`). So after any crash the store and its cursor agree, and the consumer
restarts from the cursor + 1: every item is applied exactly once. The durable consumer is
re-created at that position on start, so a wiped LMDB (cursor 0) replays its partitions from
the start of the stream: the rebuild. JetStream's acknowledgement comes after the commit and
only tells the server how far the shard is (its `num_pending` is the shard's lag). A fetch answer
lost in transit (a NATS node killed) shows as a hole in the consumer's delivery numbers
(`DeliveryOrder`); the consumer is then re-created after the cursor, so nothing after the hole is
applied before what the hole held.

`ScaleOutTrack` is the write side: it validates an event, appends it to the stream and answers
with its position once JetStream has acknowledged it; `read_after` lets a read wait (bounded)
until the owning shard has applied that position (read-your-writes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from services.common.tasks import cancel_and_wait
from services.eventlog import config as C
from services.eventlog.jetstream import DeliveryOrder, JetStreamLog, consumer_config, fetch
from services.eventlog.metrics import HOLES
from services.eventlog.partitions import partition_filter
from services.profile.keys import U64
from services.profile.store import LmdbProfileStore
from services.profile.validation import validate_event
from vitrine.v1 import common_pb2, profile_pb2

log = logging.getLogger(__name__)

CURSOR_PREFIX = b"stream:"


def cursor_key(partition: int) -> bytes:
    return CURSOR_PREFIX + str(partition).encode()


def wall_ms() -> int:
    return int(time.time() * 1000)


def read_cursor(store: LmdbProfileStore, partition: int) -> int:
    with store.env.begin(db=store.meta) as txn:
        raw = txn.get(cursor_key(partition))
    return U64.unpack(raw)[0] if raw else 0


def apply_items(store: LmdbProfileStore, partition: int, items: Sequence[profile_pb2.LoggedEvent],
                now_ms: int) -> None:
    """Fold a batch of one partition with its cursor. Runs of events are one transaction each
    (the cursor of the run's last item with it); an erasure erases the shopper and then moves
    the cursor (erasing twice is harmless, so a crash between the two is safe)."""
    run: list[common_pb2.Event] = []
    for i, item in enumerate(items):
        kind = item.WhichOneof("item")
        last = i == len(items) - 1
        if kind == "event":
            run.append(item.event)
            if not last and items[i + 1].WhichOneof("item") == "event":
                continue
            store.apply_events(run, now_ms, meta={cursor_key(partition): U64.pack(item.seq)})
            run = []
        else:
            if kind == "erasure":
                for user_id in [item.erasure.user_id, *item.erasure.aliases]:
                    store.delete(user_id, now_ms)
            # Identity items are not produced in scale-out mode yet; skipped, cursor moves on.
            store.apply_events([], now_ms, meta={cursor_key(partition): U64.pack(item.seq)})


def drop_unowned(store: LmdbProfileStore, owned: Sequence[int], partition_of: Callable[[str], int],
                 now_ms: int) -> list[int]:
    """After a shard count change: erase the shoppers of partitions this shard no longer owns,
    then their cursors (last, so a crash in between drops again; and a partition that comes back
    later has no cursor and is rebuilt from the stream). Returns the partitions dropped."""
    with store.env.begin(db=store.meta) as txn:
        held = [int(key[len(CURSOR_PREFIX):]) for key, _ in txn.cursor() if key.startswith(CURSOR_PREFIX)]
    dropped = sorted(set(held) - set(owned))
    if not dropped:
        return []
    gone = set(dropped)
    after = ""
    while True:
        rows = store.scan_profiles(after, C.FETCH_BATCH)
        if not rows:
            break
        after = rows[-1].profile.user_id
        for row in rows:
            if partition_of(row.profile.user_id) in gone:
                store.delete(row.profile.user_id, now_ms)
    with store.env.begin(write=True, db=store.meta) as txn:
        for p in dropped:
            txn.delete(cursor_key(p))
    return dropped


class ShardConsumer:
    """`owner` names this shard's durable consumers (`<owner>-p<N>`): unique per shard index and
    count, so after a shard count change an old owner still running can never pull from the new
    owner's consumer (same name = same consumer: it would take and ack the new owner's messages)."""

    def __init__(self, log: JetStreamLog, store: LmdbProfileStore, partitions: Sequence[int], *,
                 clock: Callable[[], int] = wall_ms, owner: str = "shard") -> None:
        self.owner = owner
        self.log = log
        self.store = store
        self.partitions = list(partitions)
        self.clock = clock
        self.applied: dict[int, int] = {}
        self.items_applied = 0
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._subs: list[JetStreamContext.PullSubscription] = []
        # LMDB writes from one thread at a time (the store's rule).
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")

    def owns(self, user_id: str) -> bool:
        return self.log.partition_of(user_id) in self.partitions

    def durable_name(self, partition: int) -> str:
        return f"{self.owner}-p{partition}"

    async def start(self) -> None:
        dropped = await asyncio.get_running_loop().run_in_executor(
            self._executor, drop_unowned, self.store, self.partitions, self.log.partition_of, self.clock())
        if dropped:
            log.info("dropped partitions %s (no longer owned by this shard)", dropped)
        for p in self.partitions:
            self.applied[p] = read_cursor(self.store, p)
            sub = await self._subscribe(p)
            self._subs.append(sub)
            self._tasks.append(asyncio.create_task(self._consume(p, sub), name=f"shard-p{p}"))

    async def _subscribe(self, partition: int,
                         wait_s: float = C.START_WAIT_SECONDS) -> JetStreamContext.PullSubscription:
        """The durable consumer, re-created after the partition's cursor; retried while the cluster
        elects a leader.

        The old consumer (at the previous owner's position) must be gone first: pull_subscribe
        binds to an existing durable as it is, so a delete lost in an election would make a wiped
        shard resume from the old position and skip the start of the stream. So the delete is
        retried until it succeeds (or the consumer is absent) and the bound consumer is checked."""
        s = self.log.settings
        name, subject = self.durable_name(partition), partition_filter(partition, s.prefix)
        cursor = self.applied[partition]
        want = consumer_config(cursor + 1, subject, durable=name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self.log.js.delete_consumer(s.stream, name)
                # The previous owner's consumer of this partition (another shard count): gone, so
                # the server keeps no stale consumer and the old owner stops consuming it.
                for info in await self.log.js.consumers_info(s.stream):
                    if info.name != name and info.config.filter_subject == subject:
                        with contextlib.suppress(nats.js.errors.NotFoundError):
                            await self.log.js.delete_consumer(s.stream, info.name)
                sub = await self.log.js.pull_subscribe(subject, durable=name, stream=s.stream, config=want)
                have = (await sub.consumer_info()).config
                if (have.deliver_policy, have.opt_start_seq or None) == (want.deliver_policy, want.opt_start_seq):
                    return sub
                log.warning("consumer %s was not re-created at %d; again", name, cursor + 1)
                await sub.unsubscribe()
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, TimeoutError) as exc:
                if loop.time() >= deadline:
                    raise
                log.warning("consumer %s: %s; retrying", name, type(exc).__name__)
            await asyncio.sleep(C.RETRY_SECONDS)

    async def _consume(self, partition: int, sub: JetStreamContext.PullSubscription) -> None:
        loop = asyncio.get_running_loop()
        order = DeliveryOrder()
        while not self._stopping:
            try:
                msgs, hole = order.admit(await fetch(sub, C.FETCH_BATCH))
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                if self._stopping:  # nats-py turns the stop's cancellation into ConnectionClosedError
                    return
                # A NATS node went away: the client reconnects (to another node of the cluster).
                log.warning("partition %d: fetch failed (%s), retrying", partition, exc)
                await asyncio.sleep(C.RETRY_SECONDS)
                continue
            items = []
            for m in msgs:
                item = profile_pb2.LoggedEvent.FromString(m.data)
                item.seq = m.metadata.sequence.stream
                items.append(item)
            items = [it for it in items if it.seq > self.applied[partition]]  # redelivered before our ack
            while items:
                try:
                    await loop.run_in_executor(self._executor, apply_items, self.store, partition, items,
                                               self.clock())
                    break
                except Exception:  # e.g. a full disk: nothing committed, the same batch again
                    log.exception("partition %d: applying %d items failed, retrying", partition, len(items))
                    await asyncio.sleep(C.RETRY_SECONDS)
            if items:
                self.items_applied += len(items)
                async with self._changed:
                    self.applied[partition] = items[-1].seq
                    self._changed.notify_all()
            for m in msgs:  # after the commit; only progress information for the server
                with contextlib.suppress(Exception):
                    await m.ack()
            if hole:
                HOLES.labels("shard").inc()
                log.warning("partition %d: deliveries after seq %d were lost in transit; consumer re-created there",
                            partition, self.applied[partition])
                sub, order = await self._resubscribe(partition, sub), DeliveryOrder()

    async def _resubscribe(self, partition: int,
                           old: JetStreamContext.PullSubscription) -> JetStreamContext.PullSubscription:
        """The consumer re-created after the cursor, however long the cluster takes to answer."""
        with contextlib.suppress(Exception):
            await old.unsubscribe()
        self._subs.remove(old)
        while not self._stopping:
            try:
                sub = await self._subscribe(partition)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                log.warning("partition %d: consumer not re-created yet (%s)", partition, type(exc).__name__)
                await asyncio.sleep(C.RETRY_SECONDS)
                continue
            self._subs.append(sub)
            return sub
        raise asyncio.CancelledError  # stopping

    async def wait_applied(self, partition: int, seq: int, wait_s: float = C.READ_WAIT_SECONDS) -> bool:
        """True once `partition` has applied through `seq`; False after `wait_s` seconds."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.applied.get(partition, 0) >= seq), wait_s)
            except TimeoutError:
                return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        for sub in self._subs:  # the durable consumers stay: the next owner re-creates them
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        self._executor.shutdown(wait=True)


class ScaleOutTrack:
    """Track in scale-out mode: validate, append to JetStream, answer with the position."""

    def __init__(self, log: JetStreamLog, *, retention_days: int, clock: Callable[[], int] = wall_ms) -> None:
        self.log = log
        self.retention_days = retention_days
        self.clock = clock

    async def track_batch(self, events: Sequence[common_pb2.Event]) -> list[tuple[int, bool]]:
        """(seq, applied) per event, after JetStream's acknowledgement. Raises InvalidArgument
        for the first bad event before anything is appended."""
        now = self.clock()
        items = []
        for event in events:
            validate_event(event, now, self.retention_days)
            item = profile_pb2.LoggedEvent(canonical_user_id=event.user_id)
            item.event.CopyFrom(event)
            items.append(item)
        return [(a.seq, not a.duplicate) for a in await self.log.append(items)]

    async def track(self, event: common_pb2.Event) -> tuple[int, bool]:
        return (await self.track_batch([event]))[0]
