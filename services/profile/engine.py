"""The profile engine: validation, group-commit writer, reads and the retention purge.

All writes go through one writer task that owns a single worker thread: it takes pending
event chunks from an asyncio queue, applies as many as fit (batch_max_events) in one
LMDB write transaction, and resolves each caller's future after the commit is durable.
`Track` awaits its future, so it answers only when its event is on disk, and concurrent
Tracks share one fsync. Other writes (Identify, SetConsent, ...) run in order on the same
thread, so one shopper's updates are serialized and none is lost.

With a `WriterProcess` (the service's default) that thread forwards each transaction to the
writer process and waits for its durable answer, while this process keeps receiving and
validating the next events: ingest uses two cores. Reads stay in this process.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import lmdb

from scoring.units import DAY_MS
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    VitrineError,
)
from services.profile import config as C
from services.profile import fold
from services.profile.import_checks import check_imported_profile
from services.profile.metrics import (
    FEED_FOLLOWERS_AT_HEAD,
    FEED_ITEMS,
    WRITE_BATCH_EVENTS,
    WRITE_BATCH_SECONDS,
)
from services.profile.store import DeleteResult, LmdbProfileStore, StoredEvent, TrackResult
from services.profile.validation import check_id, validate_event, validate_traits
from services.profile.writer import WriterProcess
from vitrine.v1 import common_pb2, profile_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass
class StreamSummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Job:
    events: Sequence[common_pb2.Event] | None
    call: Callable[[], Any] | None
    future: asyncio.Future[Any]


class OutOfRange(VitrineError):
    code_name = "OUT_OF_RANGE"


class ProfileEngine:
    """Domain operations of the profile service over an LmdbProfileStore."""

    def __init__(
        self,
        store: LmdbProfileStore | Callable[[], LmdbProfileStore],
        *,
        retention_days: int = C.DEFAULT_RETENTION_DAYS,
        idempotency_ttl_hours: int = C.DEFAULT_IDEMPOTENCY_TTL_HOURS,
        batch_max_events: int = C.DEFAULT_BATCH_MAX_EVENTS,
        purge_interval_seconds: float = 0.0,
        clock: Callable[[], int] = now_ms,
        writer: WriterProcess | None = None,
    ) -> None:
        # A store, or a function that opens one in start() (the service opens LMDB on start).
        self._open_store = None if isinstance(store, LmdbProfileStore) else store
        self.store: LmdbProfileStore = store if isinstance(store, LmdbProfileStore) else None  # type: ignore[assignment]
        self.retention_days = retention_days
        self.idempotency_ttl_hours = idempotency_ttl_hours
        self.batch_max_events = max(1, batch_max_events)
        self.purge_interval_seconds = purge_interval_seconds
        self.clock = clock
        # Jobs in order; None only wakes the writer loop (a lone Track went to `_urgent`).
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._urgent: collections.deque[_Job] = collections.deque()  # lone Tracks, ahead of queued batches
        self._writer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile-writer")
        self.writer = writer      # None: write in this process, on the writer thread
        # Set (and replaced) after every write: wakes the FollowEvents streams waiting at the head.
        self._log_written: asyncio.Event | None = None
        self.followers_at_head = 0
        self._head_changed: asyncio.Event | None = None
        self.batches = 0          # write transactions of events (for tests and benchmarks)
        self.batched_events = 0

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.store is None and self._open_store is not None:
            self.store = await asyncio.to_thread(self._open_store)
        if self.writer is not None:
            # The writer process sends back the RFM changes it committed; after a restart
            # (a commit whose answer was lost) reload the population from LMDB.
            store = self.store
            self.writer.on_rfm = lambda deltas: store.rfm.commit(deltas)
            self.writer.on_start = store.reload_rfm
            # Started from the writer thread, which outlives every write (see WriterProcess).
            await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.start)
        self._queue = asyncio.Queue()
        self._log_written = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="profile-writer")
        if self.purge_interval_seconds > 0:
            self._purger = asyncio.create_task(self._purge_loop(), name="profile-purge")

    async def stop(self) -> None:
        for task in (self._purger, self._writer):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # shutting down
                    pass
        if self.writer is not None:
            # Queued behind a transaction still running, so the writer finishes it first.
            await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.stop)
        self._executor.shutdown(wait=True)
        if self._queue is not None:
            pending = [*self._urgent, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
            self._urgent.clear()
            for job in pending:
                if job is not None and not job.future.done():
                    job.future.set_exception(Unavailable("the profile service is shutting down"))
        if self.store is not None:
            self.store.close()

    # -------------------------------------------------------------------------------- writer
    async def _write_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        held: _Job | None = None
        while True:
            if held is not None:
                job, held = held, None
            elif self._urgent:
                job = self._urgent.popleft()
            else:
                queued = await queue.get()
                if queued is None:
                    continue
                job = queued
            if job.call is not None:
                await self._run_call(loop, job)
                self._wake_followers()
                continue
            jobs = [job]
            count = len(job.events or ())
            # Lone Tracks first: they join the next group commit instead of waiting behind the
            # bulk batches already queued (their wait is one commit, not the whole queue).
            while self._urgent and count < self.batch_max_events:
                jobs.append(self._urgent.popleft())
                count += 1
            while count < self.batch_max_events and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    continue
                if nxt.call is not None:
                    held = nxt
                    break
                jobs.append(nxt)
                count += len(nxt.events or ())
            await self._apply_jobs(loop, jobs)
            self._wake_followers()

    def _wake_followers(self) -> None:
        """After a write (committed or not): followers at the head read the log again."""
        written = self._log_written
        if written is not None:
            self._log_written = asyncio.Event()
            written.set()

    async def _apply_jobs(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        """One transaction for all `jobs`; if it fails, each job alone, so that one caller's
        failure (a full store, a bug) does not fail the others' events."""
        events = [e for j in jobs for e in (j.events or ())]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._apply, events)
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    await self._apply_jobs(loop, [job])
                return
            if not jobs[0].future.done():
                if isinstance(exc, VitrineError | lmdb.MapFullError | lmdb.DiskError):
                    jobs[0].future.set_exception(_mapped(exc))
                else:
                    log.exception("applying %d events failed", len(events))
                    jobs[0].future.set_exception(exc)
            return
        self.batches += 1
        self.batched_events += len(events)
        WRITE_BATCH_EVENTS.observe(len(events))
        WRITE_BATCH_SECONDS.observe(time.perf_counter() - started)
        start = 0
        for j in jobs:
            n = len(j.events or ())
            if not j.future.done():
                j.future.set_result(results[start:start + n])
            start += n

    @property
    def writes(self) -> LmdbProfileStore | WriterProcess:
        """Where write transactions run: the writer process, or the store in this process."""
        return self.writer if self.writer is not None else self.store

    def _apply(self, events: list[common_pb2.Event]) -> list[TrackResult]:
        # A lone Track or two is committed right here: the round trip to the writer process
        # (two more wake-ups on a busy machine) would cost more than the fold saves. Safe
        # because this thread runs one write at a time, local or remote, and the store reads
        # `seq` and the RFM counts from the transaction (see store.py).
        target = self.store if len(events) <= C.LOCAL_APPLY_MAX_EVENTS else self.writes
        return target.apply_events(events, self.clock())

    async def _run_call(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        try:
            result = await loop.run_in_executor(self._executor, job.call)  # type: ignore[arg-type]
        except Exception as exc:  # handed to the caller
            if not job.future.done():
                job.future.set_exception(_mapped(exc))
            return
        if not job.future.done():
            job.future.set_result(result)

    def _submit_events(self, events: Sequence[common_pb2.Event],
                       urgent: bool = False) -> asyncio.Future[list[TrackResult]]:
        if self._queue is None:
            raise RuntimeError("ProfileEngine.start() was not called")
        future: asyncio.Future[list[TrackResult]] = asyncio.get_running_loop().create_future()
        if urgent:
            self._urgent.append(_Job(events, None, future))
            self._queue.put_nowait(None)  # wakes the writer loop if it waits on the queue
        else:
            self._queue.put_nowait(_Job(events, None, future))
        return future

    async def _write(self, call: Callable[[], T]) -> T:
        if self._queue is None:
            raise RuntimeError("ProfileEngine.start() was not called")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(None, call, future))
        return await asyncio.shield(future)

    # ------------------------------------------------------------------------------ the feed
    def _feed_start(self, from_seq: int) -> int:
        if from_seq < 0:
            raise InvalidArgument(f"from_seq {from_seq} must be >= 0 (0 = the oldest kept)")
        start, head = self.store.log_bounds()
        if from_seq == 0:
            return start
        if from_seq > head + 1:
            raise OutOfRange(f"from_seq {from_seq} is beyond the head of the log: the last seq is {head}, "
                             f"so resume from at most {head + 1}")
        if from_seq < start:
            raise FailedPrecondition(f"from_seq {from_seq} is no longer kept (retention); the earliest "
                                     f"available seq is {start}: rebuild from it or from 0")
        return from_seq

    def follow_events(self, from_seq: int, max_batch: int = 0) -> AsyncIterator[profile_pb2.LoggedEvent]:
        """The log from `from_seq` in seq order, then live. A bad `from_seq` raises here, before
        the stream starts."""
        batches = self.follow_event_batches(from_seq, max_batch)

        async def items() -> AsyncIterator[profile_pb2.LoggedEvent]:
            async for batch in batches:
                for item in batch:
                    yield item
        return items()

    def follow_event_batches(self, from_seq: int,
                             max_batch: int = 0) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        """As follow_events, one list per read of the log (at most max_batch items, never empty)."""
        if max_batch < 0:
            raise InvalidArgument(f"max_batch {max_batch} must be >= 0 (0 = server default)")
        if self._log_written is None:
            raise RuntimeError("ProfileEngine.start() was not called")
        return self._follow(self._feed_start(from_seq), min(max_batch or C.FEED_DEFAULT_BATCH, C.FEED_MAX_BATCH))

    async def _follow(self, cursor: int, size: int) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        # After reaching the head, wait for the writer's next commit (no polling). Items are read
        # only from committed transactions, so each acknowledged change appears exactly once and
        # nothing unacknowledged does.
        feed_item = self.store.feed_item
        while True:
            written = self._log_written  # taken before reading: a commit after the read wakes us
            assert written is not None
            rows = self.store.read_log(cursor, size)
            if rows:
                yield [feed_item(seq, raw) for seq, raw in rows]
                cursor = rows[-1][0] + 1
                FEED_ITEMS.inc(len(rows))
            if len(rows) < size:
                self._at_head(+1)
                try:
                    await written.wait()
                finally:
                    self._at_head(-1)

    def _at_head(self, delta: int) -> None:
        self.followers_at_head += delta
        FEED_FOLLOWERS_AT_HEAD.inc(delta)
        if self._head_changed is not None:
            self._head_changed.set()
            self._head_changed = asyncio.Event()

    async def wait_followers_at_head(self, n: int) -> None:
        """Until at least `n` FollowEvents streams wait at the head of the log (for tests)."""
        while self.followers_at_head < n:
            if self._head_changed is None:
                self._head_changed = asyncio.Event()
            await self._head_changed.wait()

    # -------------------------------------------------------------------------------- events
    def validate(self, event: common_pb2.Event) -> common_pb2.Event:
        return validate_event(event, self.clock(), self.retention_days)

    async def track(self, event: common_pb2.Event) -> TrackResult:
        """Apply one event; returns once it is durable (or was a duplicate)."""
        self.validate(event)
        results = await asyncio.shield(self._submit_events([event], urgent=True))
        return results[0]

    async def track_batch(self, events: Sequence[common_pb2.Event]) -> StreamSummary:
        """Validate up to MAX_TRACK_BATCH events and apply the good ones in one group commit;
        returns once they are durable. Bad events are counted as rejected with their reason."""
        if len(events) > C.MAX_TRACK_BATCH:
            raise InvalidArgument(f"events: {len(events)} events in one TrackBatch; at most {C.MAX_TRACK_BATCH} "
                                  "are allowed (split the batch)")
        summary = StreamSummary()
        good = [event for index, event in enumerate(events) if self.accept(event, index, summary)]
        if good:
            for result in await asyncio.shield(self._submit_events(good)):
                if result.applied:
                    summary.accepted += 1
                else:
                    summary.duplicates += 1
        return summary

    def accept(self, event: common_pb2.Event, index: int, summary: StreamSummary) -> bool:
        """Validate event number `index` of a batch or stream; a bad one is counted in `summary` as
        rejected with its reason (the first STREAM_MAX_ERRORS). Scale-out mode uses it too."""
        try:
            self.validate(event)
        except InvalidArgument as exc:
            summary.rejected += 1
            if len(summary.errors) < C.STREAM_MAX_ERRORS:
                summary.errors.append(f"event {index} ({event.event_id[:C.MAX_ID_LENGTH]}): {exc.message}")
            return False
        return True

    async def track_stream(self, events: AsyncIterable[common_pb2.Event]) -> StreamSummary:
        """Validate and apply a stream of events in chunks; returns once every accepted event is
        durable. Bad events are counted as rejected with their reason; the good ones still apply."""
        summary = StreamSummary()
        pending: list[asyncio.Future[list[TrackResult]]] = []
        chunk: list[common_pb2.Event] = []

        def collect(results: list[TrackResult]) -> None:
            for r in results:
                if r.applied:
                    summary.accepted += 1
                else:
                    summary.duplicates += 1

        index = -1
        async for event in events:
            index += 1
            if not self.accept(event, index, summary):
                continue
            chunk.append(event)
            if len(chunk) >= C.STREAM_CHUNK_EVENTS:
                pending.append(self._submit_events(chunk))
                chunk = []
                if len(pending) >= C.STREAM_CHUNKS_IN_FLIGHT:
                    collect(await asyncio.shield(pending.pop(0)))
        if chunk:
            pending.append(self._submit_events(chunk))
        for future in pending:
            collect(await asyncio.shield(future))
        return summary

    # --------------------------------------------------------------------------------- reads
    def get_profile(self, user_id: str) -> common_pb2.Profile:
        check_id(user_id, "user_id")
        state = self.store.get(user_id)
        if state is None:
            raise NotFound(f"no profile for user_id {user_id!r}")
        return self.view(state)

    def view(self, state: profile_pb2.StoredProfile) -> common_pb2.Profile:
        return fold.public_view(state, self.clock(), self.store.rfm.score)

    def user_events(self, user_id: str) -> list[StoredEvent]:
        return self.store.user_events(user_id)

    def resolve_alias(self, user_id: str) -> str:
        """For a sharded router: the target of an alias stored here ("" = none), remote or not."""
        check_id(user_id, "user_id")
        return self.store.alias_target(user_id)

    async def own_events(self, user_id: str, limit: int) -> list[common_pb2.Event]:
        """For a sharded router: the log stored under exactly `user_id`, oldest first."""
        check_id(user_id, "user_id")
        if limit < 0:
            raise InvalidArgument(f"limit {limit} must be >= 0 (0 = all)")
        rows = await asyncio.to_thread(self.store.own_events, user_id, limit)
        return [row.event for row in rows]

    async def export(self, user_id: str) -> dict[str, Any]:
        check_id(user_id, "user_id")
        return await asyncio.to_thread(self.store.export, user_id, self.clock())

    async def scan_profiles(self, start_after: str, limit: int) -> AsyncIterable[common_pb2.Profile]:
        if limit < 0:
            raise InvalidArgument(f"limit {limit} must be >= 0 (0 = all)")
        check_id(start_after, "start_after", required=False)
        remaining = limit or None
        after = start_after
        while True:
            size = C.SCAN_CHUNK if remaining is None else min(C.SCAN_CHUNK, remaining)
            rows = await asyncio.to_thread(self.store.scan_profiles, after, size)
            for state in rows:
                yield self.view(state)
            if remaining is not None:
                remaining -= len(rows)
                if remaining <= 0:
                    return
            if len(rows) < size:
                return
            after = rows[-1].profile.user_id

    async def scan_events(self, since_ms: int, until_ms: int, types: Sequence[int],
                          limit: int) -> AsyncIterable[common_pb2.Event]:
        if since_ms < 0 or until_ms < 0 or limit < 0:
            raise InvalidArgument("since_ms, until_ms and limit must be >= 0 (0 = no bound)")
        if until_ms and until_ms <= since_ms:
            raise InvalidArgument(f"until_ms {until_ms} must be after since_ms {since_ms}")
        known = set(common_pb2.EventType.values()) - {0}
        bad = [t for t in types if t not in known]
        if bad:
            raise InvalidArgument(f"types: {bad} are not known EventType values")
        wanted = frozenset(types)
        after = b""
        sent = 0
        while True:
            size = C.SCAN_CHUNK if not limit else min(C.SCAN_CHUNK, limit - sent)
            rows, after_key = await asyncio.to_thread(self.store.scan_events, after, since_ms, until_ms, wanted, size)
            for row in rows:
                yield row.event
            sent += len(rows)
            if after_key is None or (limit and sent >= limit):
                return
            after = after_key

    # ------------------------------------------------------------------------ other writes
    async def identify(self, anonymous_id: str, customer_id: str, traits: dict[str, str]) -> common_pb2.Profile:
        check_id(anonymous_id, "anonymous_id")
        check_id(customer_id, "customer_id")
        validate_traits(traits)
        state = await self._write(lambda: self.writes.identify(anonymous_id, customer_id, traits, self.clock()))
        return self.view(state)

    async def set_consent(self, user_id: str, consent: common_pb2.Consent) -> common_pb2.Profile:
        check_id(user_id, "user_id")
        if consent.updated_ms < 0 or consent.updated_ms > self.clock() + C.FUTURE_SKEW_MS:
            raise InvalidArgument(f"consent.updated_ms {consent.updated_ms} must be epoch ms, not in the future "
                                  "(0 = now)")
        state = await self._write(lambda: self.writes.set_consent(user_id, consent, self.clock()))
        return self.view(state)

    async def delete(self, user_id: str) -> DeleteResult:
        check_id(user_id, "user_id")
        return await self._write(lambda: self.writes.delete(user_id, self.clock()))

    async def import_profile(self, profile: common_pb2.Profile,
                             events: Sequence[common_pb2.Event]) -> common_pb2.Profile:
        check_id(profile.user_id, "profile.user_id")
        validate_traits(profile.traits, "profile.traits")
        check_imported_profile(profile)  # counters, times and amounts in range (reliability, #19)
        now = self.clock()
        cutoff = now - self.retention_days * DAY_MS
        kept = []
        for i, event in enumerate(events):
            if not event.user_id:
                event.user_id = profile.user_id
            if not event.event_id:
                raise InvalidArgument(f"events[{i}].event_id is required for ImportProfile")
            try:
                validate_event(event, now, 10**6)
            except InvalidArgument as exc:
                raise InvalidArgument(f"events[{i}]: {exc.message}") from exc
            if event.timestamp_ms >= cutoff:
                kept.append(event)
        state = await self._write(lambda: self.writes.import_profile(profile, kept, self.clock()))
        return self.view(state)

    async def put_alias(self, alias_id: str, target_id: str) -> bool:
        check_id(alias_id, "alias_id")
        check_id(target_id, "target_id")
        if alias_id == target_id:
            raise InvalidArgument("alias_id and target_id must differ")
        return await self._write(lambda: self.writes.put_alias(alias_id, target_id))

    # ----------------------------------------------------------------------------- retention
    async def purge_once(self) -> tuple[int, int]:
        """Delete events older than the retention window and forget expired event_ids, in
        chunks so Track is never held up for long. Returns (events, idempotency keys) removed."""
        now = self.clock()
        cutoff_ms = now - self.retention_days * DAY_MS
        cutoff_s = (now - self.idempotency_ttl_hours * 3_600_000) // 1000
        events = keys = 0
        start: bytes | None = b""
        while start is not None:
            n, start = await self._write(functools.partial(self.writes.purge_events, cutoff_ms, start,
                                                           C.PURGE_CHUNK_KEYS))
            events += n
        start = b""
        while start is not None:
            n, start = await self._write(functools.partial(self.writes.expire_idempotency, cutoff_s, start,
                                                           C.PURGE_CHUNK_KEYS))
            keys += n
        trimmed = 0
        done = False
        while not done:
            n, done = await self._write(lambda: self.writes.trim_log(cutoff_ms, C.PURGE_CHUNK_KEYS))
            trimmed += n
        if events or keys or trimmed:
            log.info("retention purge removed %d events, %d idempotency keys and %d feed items", events, keys,
                     trimmed, extra={"fields": {"events": events, "idempotency_keys": keys, "feed_items": trimmed}})
        return events, keys

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval_seconds)
            try:
                await self.purge_once()
            except Exception:  # keep purging next time
                log.exception("retention purge failed")


def _mapped(exc: BaseException) -> BaseException:
    if isinstance(exc, lmdb.MapFullError):
        return ResourceExhausted("the profile store is full; raise --map-size-mb")
    if isinstance(exc, lmdb.DiskError):  # ENOSPC on commit; the transaction was not stored (#19)
        return ResourceExhausted(f"the profile store's disk is full ({exc}); nothing of this write was stored: "
                                 "free space on the data directory's filesystem and retry")
    return exc


__all__ = ["ProfileEngine", "StreamSummary", "now_ms"]
