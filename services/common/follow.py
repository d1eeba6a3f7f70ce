"""The one client-side follower of a "follow from seq" feed (FollowEvents, FollowCatalog, ...).

A consumer gives it a way to open the server stream from a cursor, a cursor store and a
handler; the follower opens the stream at `cursor.load()`, hands the items to the handler in
order, reconnects with jittered exponential backoff whenever the stream breaks (server down,
restarted, network), and resumes after the last item the handler accepted. Exactly once from
the consumer's view: the handler commits `seq + 1` of the last item it processed in the same
transaction as its own state (see `LmdbCursor.put`), so after a crash `load()` returns where
its durable state ends; within one run the follower skips anything at or below what the
handler already accepted.

    follower = Follower(
        "journeys-events",
        lambda seq: profile_stub.FollowEvents(FollowEventsRequest(from_seq=seq)),
        cursor,
        on_batch=apply,          # or on_item=...; sync or async; commits cursor.put(txn, seq + 1)
        time_of=event_time_ms,   # optional: lag in seconds
    )
    follower.start()
    ...
    await follower.stop()

A feed that sends its items grouped (`ProfileService.FollowEventBatches`, one message per read
of the log: far cheaper in Python gRPC than a message per item when catching up) is followed
the same way with `items_of=lambda batch: batch.items`; the handler still sees items.

Open the channel with `services.common.channel.open_channel` (keepalive pings keep an idle
stream alive and detect a dead server); the stream itself has no deadline: it is meant to
stay open. Statuses a retry cannot fix (the cursor is out of range or no longer kept, bad
request, no permission, unknown method) stop the follower and raise from `run()` / `stop()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import grpc
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

T = TypeVar("T")

FOLLOW_ITEMS = Counter("vitrine_follow_items_total", "feed items handed to the consumer", ["feed"])
FOLLOW_RECONNECTS = Counter("vitrine_follow_reconnects_total", "feed streams re-opened after a break", ["feed"])
FOLLOW_HANDLER_ERRORS = Counter("vitrine_follow_handler_errors_total",
                                "consumer handler failures (the items are delivered again)", ["feed"])
FOLLOW_CURSOR = Gauge("vitrine_follow_cursor", "next seq the consumer will ask for", ["feed"])
FOLLOW_LAG = Gauge("vitrine_follow_lag_seconds", "age of the last item handled (when the feed carries times)",
                   ["feed"])
FOLLOW_CONNECTED = Gauge("vitrine_follow_connected", "1 while the feed stream is open", ["feed"])

# A retry cannot fix these: stop and tell the owner.
FATAL_CODES = frozenset({
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.NOT_FOUND,
})

DEFAULT_MAX_BATCH = 256        # items handed to on_batch at most at once
DEFAULT_BUFFER = 1024          # items read ahead of the handler (backpressure on the stream beyond)


class CursorStore(Protocol):
    """Where the consumer keeps its cursor: the next seq to ask for (0 = from the oldest kept)."""

    def load(self) -> int: ...


class MemoryCursor:
    """A cursor that lives as long as the process (tests, consumers that rebuild from 0)."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def load(self) -> int:
        return self.value

    def put(self, next_seq: int) -> None:
        self.value = next_seq


_CURSOR = struct.Struct("<Q")


class LmdbCursor:
    """A cursor in one key of the consumer's own LMDB database. The handler calls
    `put(txn, seq + 1)` inside the write transaction that stores what it derived from the item,
    so state and cursor commit together."""

    def __init__(self, env: Any, db: Any, key: bytes) -> None:
        self.env, self.db, self.key = env, db, key

    def load(self) -> int:
        with self.env.begin(db=self.db) as txn:
            raw = txn.get(self.key)
        return _CURSOR.unpack(raw)[0] if raw else 0

    def put(self, txn: Any, next_seq: int) -> None:
        txn.put(self.key, _CURSOR.pack(next_seq), db=self.db)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delays between reconnects: `initial * multiplier**attempt`, capped, times a random
    factor in [1 - jitter, 1] so that many followers of one restarted server spread out."""

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


@dataclasses.dataclass
class FollowStats:
    items: int = 0            # items handed to the handler
    batches: int = 0
    reconnects: int = 0       # streams opened after the first
    handler_errors: int = 0
    skipped: int = 0          # items at or below the cursor the server sent again (never handed on)
    cursor: int = 0           # next seq to ask for
    connected: bool = False
    lag_seconds: float = 0.0  # age of the last item handled (0 without time_of)


class FatalFollowError(Exception):
    """The server answered a status a reconnect cannot fix (e.g. the cursor is no longer kept)."""

    def __init__(self, feed: str, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"feed {feed}: {error.code().name}: {error.details()}")
        self.code = error.code()
        self.details = error.details() or ""


class _End:
    """Put by the reader when the stream ends; carries the error, if any."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _seq(item: Any) -> int:
    return int(item.seq)


class Follower(Generic[T]):
    """Follows one feed from a cursor; see the module docstring."""

    def __init__(
        self,
        name: str,
        open_stream: Callable[[int], Any],
        cursor: CursorStore,
        *,
        on_item: Callable[[T], Awaitable[None] | None] | None = None,
        on_batch: Callable[[Sequence[T]], Awaitable[None] | None] | None = None,
        seq_of: Callable[[T], int] = _seq,
        time_of: Callable[[T], int] | None = None,
        items_of: Callable[[Any], Sequence[T]] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        buffer: int = DEFAULT_BUFFER,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (on_item is None) == (on_batch is None):
            raise ValueError("give exactly one of on_item and on_batch")
        self.name = name
        self._open = open_stream
        self._cursor_store = cursor
        self._on_item = on_item
        self._on_batch = on_batch
        self._seq_of = seq_of
        self._time_of = time_of
        self._items_of = items_of
        self.max_batch = max(1, max_batch)
        self._buffer = max(self.max_batch, buffer)
        self.backoff = backoff
        self._rng = rng or random.Random()
        self._clock = clock
        self.stats = FollowStats()
        self._next: int | None = None      # next seq to ask for (None: not loaded yet)
        self._stopping = False
        self._in_handler = False
        self._task: asyncio.Task[None] | None = None
        self._call: Any = None
        self._progress = asyncio.Event()   # replaced after each batch (wakes wait_for_cursor)
        self._wake = asyncio.Event()       # set by stop() to cut a backoff wait short
        self._metrics = (FOLLOW_ITEMS.labels(name), FOLLOW_RECONNECTS.labels(name),
                         FOLLOW_HANDLER_ERRORS.labels(name), FOLLOW_CURSOR.labels(name),
                         FOLLOW_LAG.labels(name), FOLLOW_CONNECTED.labels(name))

    # --------------------------------------------------------------------------- lifecycle
    def start(self) -> asyncio.Task[None]:
        """Run in a task of the current event loop; returns it."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"follow-{self.name}")
        return self._task

    async def stop(self, grace: float = 10.0) -> None:
        """Stop after the batch being handled (a handler is never interrupted, but one still
        running after `grace` seconds is cancelled) and close the stream. Raises the
        FatalFollowError that ended the follower, if one did."""
        self._stopping = True
        self._wake.set()
        if self._call is not None:
            self._call.cancel()
        task = self._task
        if task is None:
            return
        if not self._in_handler:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        except TimeoutError:
            task.cancel()
            log.warning("follower %s did not stop within %.0f s; cancelled", self.name, grace)

    @property
    def cursor(self) -> int:
        """The next seq the follower will ask for (everything below was handled)."""
        return self._next if self._next is not None else self._cursor_store.load()

    async def wait_for_cursor(self, next_seq: int) -> None:
        """Until every item below `next_seq` was handled (bound it with asyncio.wait_for)."""
        while self.cursor < next_seq:
            if self._task is not None and self._task.done():
                self._task.result()  # raises what ended it
                raise RuntimeError(f"follower {self.name} stopped at {self.cursor}")
            await self._progress.wait()

    # -------------------------------------------------------------------------------- loop
    async def run(self) -> None:
        """Follow until stop(); raises FatalFollowError on a status a retry cannot fix."""
        self._next = self._cursor_store.load()
        self._metrics[3].set(self._next)
        self.stats.cursor = self._next
        attempt = 0
        first = True
        try:
            while not self._stopping:
                if not first:
                    self.stats.reconnects += 1
                    self._metrics[1].inc()
                first = False
                delivered = await self._session()
                if self._stopping:
                    break
                attempt = 0 if delivered else attempt + 1
                delay = self.backoff.delay(attempt, self._rng)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            self.stats.connected = False
            self._metrics[5].set(0)
            self._wake_waiters()

    async def _session(self) -> bool:
        """One stream from the cursor until it breaks; True if it was established (the server
        accepted the cursor or sent an item), so the next reconnect starts at the first delay."""
        assert self._next is not None
        call = self._call = self._open(self._next)
        queue: asyncio.Queue[Any] = asyncio.Queue(self._buffer)
        established = asyncio.Event()
        reader = asyncio.create_task(self._read(call, queue, established))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return self._ended(item.error, established.is_set())
                batch = [item]
                while len(batch) < self.max_batch and not queue.empty():
                    nxt = queue.get_nowait()
                    if isinstance(nxt, _End):
                        queue.put_nowait(nxt)  # handled on the next round, after this batch
                        break
                    batch.append(nxt)
                if not await self._deliver(batch):
                    return True  # the handler failed: reconnect from the last accepted item
                if self._stopping:
                    return True
        finally:
            call.cancel()
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # the stream is being dropped
                pass
            self._call = None
            self.stats.connected = False
            self._metrics[5].set(0)

    async def _read(self, call: Any, queue: asyncio.Queue[Any], established: asyncio.Event) -> None:
        try:
            await call.initial_metadata()
            if not call.done():  # a call that failed to connect also "returns" (empty) metadata
                self._established(established)
            items_of = self._items_of
            async for message in call:
                self._established(established)
                if items_of is None:
                    await queue.put(message)
                else:  # a batched feed (e.g. FollowEventBatches): its items one by one
                    for item in items_of(message):
                        await queue.put(item)
            await queue.put(_End(None))
        except grpc.aio.AioRpcError as err:
            await queue.put(_End(err))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream object: treat like a break
            await queue.put(_End(exc))

    def _established(self, established: asyncio.Event) -> None:
        if not established.is_set():
            established.set()
            self.stats.connected = True
            self._metrics[5].set(1)

    def _ended(self, error: BaseException | None, established: bool) -> bool:
        if isinstance(error, grpc.aio.AioRpcError):
            if error.code() in FATAL_CODES and not self._stopping:
                log.error("feed %s: %s (%s); the follower stops", self.name, error.code().name, error.details())
                raise FatalFollowError(self.name, error) from error
            if not self._stopping:
                log.info("feed %s: stream broke (%s); reconnecting from %s", self.name, error.code().name,
                         self._next, extra={"fields": {"feed": self.name, "cursor": self._next}})
        elif error is not None and not self._stopping:
            log.warning("feed %s: stream failed (%r); reconnecting", self.name, error)
        return established

    async def _deliver(self, batch: list[Any]) -> bool:
        """Hand the new items of `batch` to the handler; advance the cursor past what it took."""
        assert self._next is not None
        fresh = [item for item in batch if self._seq_of(item) >= self._next]
        self.stats.skipped += len(batch) - len(fresh)
        if not fresh:
            return True
        self._in_handler = True
        try:
            if self._on_batch is not None:
                result = self._on_batch(fresh)
                if inspect.isawaitable(result):
                    await result
                self._accepted(fresh[-1], len(fresh))
            else:
                assert self._on_item is not None
                for item in fresh:
                    result = self._on_item(item)
                    if inspect.isawaitable(result):
                        await result
                    self._accepted(item, 1)
        except Exception:
            self.stats.handler_errors += 1
            self._metrics[2].inc()
            log.exception("feed %s: the handler failed at seq %s; delivering it again", self.name, self._next)
            return False
        finally:
            self._in_handler = False
            self._wake_waiters()
        self.stats.batches += 1
        return True

    def _accepted(self, last: Any, n: int) -> None:
        self._next = self._seq_of(last) + 1
        self.stats.cursor = self._next
        self.stats.items += n
        items, _, _, cursor, lag, _ = self._metrics
        items.inc(n)
        cursor.set(self._next)
        if self._time_of is not None:
            at = self._time_of(last)
            if at:
                self.stats.lag_seconds = max(0.0, self._clock() - at / 1000.0)
                lag.set(self.stats.lag_seconds)

    def _wake_waiters(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()



class FollowerGroup:
    """The followers of one consumer (e.g. one per profile shard) and the channels they read: started
    together, stopped together (a follower that had stopped on a fatal status is logged, not raised),
    channels closed after."""

    def __init__(self, label: str, channels: Sequence[grpc.aio.Channel] = ()) -> None:
        self.label = label
        self.channels = list(channels)
        self.followers: list[Follower[Any]] = []

    def start(self) -> None:
        for follower in self.followers:
            follower.start()

    async def stop(self) -> None:
        for follower in self.followers:
            try:
                await follower.stop()
            except FatalFollowError as exc:  # already logged by the follower when it stopped
                log.warning("%s had stopped: %s", self.label, exc)
        for channel in self.channels:
            await channel.close()


__all__ = ["Backoff", "CursorStore", "FatalFollowError", "FollowStats", "Follower", "FollowerGroup", "LmdbCursor",
           "MemoryCursor"]
