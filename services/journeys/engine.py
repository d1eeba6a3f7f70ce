"""The journeys engine: definitions, the feed, durable timers and the outbox, on one store.

All LMDB work runs on the event loop thread in short transactions (one writer at a time by
construction); the slow part of a send (asking the other services) runs between them, and
its result is committed only if the shopper's state did not change meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import lmdb
from prometheus_client import Counter, Gauge, Histogram

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.tasks import cancel_and_wait
from services.journeys import config as C
from services.journeys.definitions import check_id, validate_journey
from services.journeys.feed import FeedApplier
from services.journeys.machines import IDLE, WAITING, JourneyState, Machine, Watch, machine_for
from services.journeys.sending import CANCEL, SEND, SUPPRESS, WAIT, Backends, Outcome, SendSettings, cap_allows, prepare
from services.journeys.store import CATALOG_CURSOR, JourneyStore, events_cursor
from vitrine.v1 import journey_pb2, profile_pb2, recommend_pb2

log = logging.getLogger(__name__)

TIMER_LATENESS = Histogram("vitrine_journeys_timer_lateness_seconds", "Time from a timer's due time to its handling",
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
OUTCOMES = Counter("vitrine_journeys_due_total", "Due timers handled, by outcome and reason", ["outcome", "reason"])
FEED_ITEMS = Counter("vitrine_journeys_feed_items_total", "Feed items applied", ["feed"])
PENDING = Gauge("vitrine_journeys_pending_timers", "Timers waiting (all journeys)")

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class JourneyEngine:
    def __init__(self, store: JourneyStore, backends: Backends, settings: SendSettings, *,
                 clock: Clock = wall_clock_ms, on_due: Callable[[int, str], None] | None = None) -> None:
        self.store = store
        self.backends = backends
        self.settings = settings
        self.clock = clock
        self.on_due = on_due      # (lateness_ms, outcome kind) of every handled timer (benchmarks)
        self.feed = FeedApplier(store, settings.attribution_ms)
        self._wake = asyncio.Event()
        self._outbox = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reload()

    # Lifecycle.
    async def start(self) -> None:
        self._task = asyncio.create_task(self._timer_loop(), name="journeys-timers")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def poke(self) -> None:
        """Look at the timers and the outbox now (a new item, or a test's clock moved)."""
        self._wake.set()
        self._outbox.set()

    def _reload(self) -> None:
        with self.store.read() as txn:
            journeys = self.store.journeys(txn)
        self.feed.set_machines(machine_for(j) for j in journeys)

    # Definitions.
    def put_journey(self, journey: journey_pb2.Journey) -> journey_pb2.Journey:
        validate_journey(journey)
        stored = journey_pb2.Journey()
        stored.CopyFrom(journey)
        stored.updated_ms = self.clock()
        with self.store.write() as txn:
            known = {j.journey_id for j in self.store.journeys(txn)}
            if journey.journey_id not in known and len(known) >= C.MAX_JOURNEYS:
                raise ResourceExhausted(f"at most {C.MAX_JOURNEYS} journeys; delete one first")
            self.store.put_journey(txn, stored)
        self._reload()
        return stored

    def get_journey(self, journey_id: str) -> journey_pb2.Journey:
        check_id(journey_id, "journey_id")
        with self.store.read() as txn:
            for journey in self.store.journeys(txn):
                if journey.journey_id == journey_id:
                    return journey
        raise NotFound(f"no journey {journey_id!r}; ListJourneys shows the defined ones")

    def list_journeys(self) -> list[journey_pb2.Journey]:
        with self.store.read() as txn:
            return self.store.journeys(txn)

    def delete_journey(self, journey_id: str) -> bool:
        """Pending timers of a deleted journey are cancelled when they fall due."""
        check_id(journey_id, "journey_id")
        with self.store.write() as txn:
            deleted = self.store.delete_journey(txn, journey_id)
        self._reload()
        return deleted

    # Feeds.
    def events_cursor(self, source: int = 0) -> int:
        with self.store.read() as txn:
            return self.store.cursor_of(txn, events_cursor(source))

    def catalog_cursor(self) -> int:
        with self.store.read() as txn:
            return self.store.cursor_of(txn, CATALOG_CURSOR)

    def apply_events(self, items: Sequence[profile_pb2.LoggedEvent], source: int = 0) -> int:
        """Apply feed items on this thread (tests, benchmarks); the followers use the async twin."""
        applied = self._apply_events(items, source)
        self._wake.set()
        return applied

    def apply_catalog(self, items: Sequence[recommend_pb2.CatalogChange]) -> int:
        applied = self._apply_catalog(items)
        self._wake.set()
        return applied

    async def apply_events_async(self, items: Sequence[profile_pb2.LoggedEvent], source: int = 0) -> int:
        """Commit in a worker thread: while it fsyncs, the loop keeps reading the stream (so the next
        batch is a large one) and serving calls. LMDB serializes this writer with the loop's own."""
        applied = await asyncio.to_thread(self._apply_events, items, source)
        self._wake.set()
        return applied

    async def apply_catalog_async(self, items: Sequence[recommend_pb2.CatalogChange]) -> int:
        applied = await asyncio.to_thread(self._apply_catalog, items)
        self._wake.set()
        return applied

    def _apply_events(self, items: Sequence[profile_pb2.LoggedEvent], source: int) -> int:
        applied = 0
        for start in range(0, len(items), C.FEED_BATCH):
            applied += self.feed.apply_events(items[start:start + C.FEED_BATCH], source)
        FEED_ITEMS.labels("events").inc(applied)
        return applied

    def _apply_catalog(self, items: Sequence[recommend_pb2.CatalogChange]) -> int:
        applied = 0
        for start in range(0, len(items), C.FEED_BATCH):
            applied += self.feed.apply_catalog(items[start:start + C.FEED_BATCH])
        FEED_ITEMS.labels("catalog").inc(applied)
        return applied

    # Timers.
    async def _timer_loop(self) -> None:
        while True:
            try:
                handled = await self.run_due()
            except Exception:
                log.exception("timer pass failed; retrying")
                handled = 0
            if handled:
                continue
            with self.store.read() as txn:
                next_due = self.store.next_due(txn)
                PENDING.set(self.store.count(txn, "timers"))
            wait = C.TIMER_IDLE_SECONDS
            if next_due is not None:
                wait = max(0.0, min(wait, (next_due - self.clock()) / 1000))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def run_due(self) -> int:
        """Handle one batch of due timers; returns how many."""
        now = self.clock()
        with self.store.read() as txn:
            due = self.store.due_timers(txn, now, C.TIMER_BATCH)
            work = []
            for due_ms, user, journey_id in due:
                state = self.store.state(txn, user, journey_id)
                work.append((due_ms, user, journey_id, state))
        if not due:
            return 0
        limit = asyncio.Semaphore(C.TIMER_CONCURRENCY)

        async def decide(user: str, journey_id: str, state: JourneyState | None) -> Outcome | None:
            machine = self.feed.machines.get(journey_id)
            if machine is None or state is None:
                return None
            async with limit:
                return await prepare(machine, user, state, now, self.backends, self.settings)

        outcomes = await asyncio.gather(*(decide(u, j, s) for _d, u, j, s in work))
        sent = False
        with self.store.write() as txn:
            for (due_ms, user, journey_id, before), outcome in zip(work, outcomes, strict=True):
                TIMER_LATENESS.observe(max(0, now - due_ms) / 1000)
                sent |= self._commit(txn, due_ms, user, journey_id, before, outcome, now)
                if self.on_due is not None:
                    self.on_due(self.clock() - due_ms, outcome.kind if outcome else "stale")
        if sent:
            self._outbox.set()
        return len(due)

    def _commit(self, txn: lmdb.Transaction, due_ms: int, user: str, journey_id: str, before: JourneyState | None,
                outcome: Outcome | None, now: int) -> bool:
        store = self.store
        state = store.state(txn, user, journey_id)
        if state is None or state.status != WAITING or state.due_ms != due_ms:
            store.set_timer(txn, user, journey_id, due_ms, 0)
            return False                                  # a stale timer (the state moved on)
        if before is None or state.entry != before.entry:
            return False                                  # re-entered while we were asking: next pass
        machine: Machine | None = self.feed.machines.get(journey_id)
        add = store.add_stat
        if outcome is None:
            outcome = Outcome(CANCEL, "journey_disabled")
        if outcome.kind == WAIT:
            store.set_timer(txn, user, journey_id, due_ms, outcome.due_ms)
            state.due_ms = outcome.due_ms
            store.put_state(txn, user, journey_id, state)
            OUTCOMES.labels("wait", outcome.reason).inc()
            return False
        if outcome.kind == SEND and outcome.message is not None:
            message = outcome.message
            recent = store.sends(txn, message.user_id)
            allowed, recent = cap_allows(recent, now, self.settings.frequency_cap, self.settings.frequency_window_ms)
            if allowed or outcome.skip_cap:
                if store.add_message(txn, message, now):
                    add(txn, journey_id, "sent")
                store.put_sends(txn, message.user_id, [*recent, now])
                state.last_sent_ms = now
            else:
                outcome = Outcome(SUPPRESS, "frequency_cap")
        if outcome.kind == SUPPRESS:
            add(txn, journey_id, "suppressed")
            add(txn, journey_id, f"suppressed:{outcome.reason}")
        elif outcome.kind == CANCEL:
            add(txn, journey_id, "cancelled")
            add(txn, journey_id, f"cancelled:{outcome.reason}")
        OUTCOMES.labels(outcome.kind, outcome.reason).inc()
        store.set_timer(txn, user, journey_id, due_ms, 0)
        add(txn, journey_id, "pending", -1)
        state.status = IDLE
        state.due_ms = 0
        if machine is not None:
            machine.reset(state)
        store.put_state(txn, user, journey_id, state)
        return outcome.kind == SEND

    # Retention.
    def purge(self, retention_ms: int) -> tuple[int, int]:
        """One full pass, a chunk per transaction: delivered messages older than `retention_ms` (never
        inside the attribution window) and watches no journey would use. Returns (messages, watches)."""
        now = self.clock()
        before = now - max(retention_ms, self.settings.attribution_ms)
        messages = watches = 0
        start: bytes | None = b""
        while start is not None:
            with self.store.write() as txn:
                deleted, start = self.store.purge_messages(txn, before, start, C.PURGE_CHUNK_KEYS)
            messages += deleted

        def keep(journey_id: str, watch: Watch) -> bool:
            machine = self.feed.machines.get(journey_id)
            return machine is not None and machine.fresh(watch, now)

        start = b""
        while start is not None:
            with self.store.write() as txn:
                deleted, start = self.store.purge_watches(txn, keep, start, C.PURGE_CHUNK_KEYS)
            watches += deleted
        return messages, watches

    # Outbox.
    def take(self, max_messages: int, visibility_ms: Callable[[int], int] | None = None) -> list[journey_pb2.Message]:
        """Lease up to `max_messages` ready messages: each becomes visible again after its timeout."""
        now = self.clock()
        lease = visibility_ms or (lambda _attempt: self.settings.visibility_ms)
        out = []
        with self.store.write() as txn:
            for visible, message_id in self.store.ready_messages(txn, now, max_messages):
                delivery = self.store.delivery(txn, message_id)
                message = self.store.message(txn, message_id)
                if delivery is None or message is None or delivery.acked or delivery.dead:
                    self.store.move_ready(txn, message_id, visible, None)
                    continue
                delivery.attempts += 1
                if delivery.attempts > C.MAX_DELIVERY_ATTEMPTS:
                    delivery.dead = True
                    self.store.move_ready(txn, message_id, visible, None)
                    self.store.add_stat(txn, delivery.journey_id, "dead_lettered")
                else:
                    delivery.visible_ms = now + lease(delivery.attempts)
                    self.store.move_ready(txn, message_id, visible, delivery.visible_ms)
                    message.delivery_attempt = delivery.attempts
                    out.append(message)
                self.store.put_delivery(txn, message_id, delivery)
        return out

    async def pull(self, max_messages: int, wait_ms: int) -> list[journey_pb2.Message]:
        if max_messages < 0 or max_messages > C.MAX_PULL:
            raise InvalidArgument(f"max must be between 0 and {C.MAX_PULL} (0 = {C.DEFAULT_PULL_MAX})")
        if wait_ms < 0 or wait_ms > C.MAX_PULL_WAIT_MS:
            raise InvalidArgument(f"wait_ms must be between 0 and {C.MAX_PULL_WAIT_MS}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        while True:
            self._outbox.clear()
            messages = self.take(max_messages or C.DEFAULT_PULL_MAX)
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return messages
            with self.store.read() as txn:
                next_visible = self.store.next_ready(txn)
            if next_visible is not None:
                remaining = min(remaining, max(0.0, (next_visible - self.clock()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.wait(), timeout=max(remaining, 0.001))

    async def wait_for_outbox(self, max_seconds: float) -> None:
        """Until a message may be ready (one was added, or the next lease ends), at most `max_seconds`."""
        with self.store.read() as txn:
            next_visible = self.store.next_ready(txn)
        if next_visible is not None:
            max_seconds = min(max_seconds, max(0.0, (next_visible - self.clock()) / 1000))
        self._outbox.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.wait(), timeout=max(max_seconds, 0.001))

    def ack(self, message_ids: Sequence[str]) -> int:
        if len(message_ids) > C.MAX_ACK_IDS:
            raise InvalidArgument(f"at most {C.MAX_ACK_IDS} message ids per AckMessages")
        acked = 0
        with self.store.write() as txn:
            for message_id in message_ids:
                delivery = self.store.delivery(txn, message_id) if message_id else None
                if delivery is None or delivery.acked or delivery.dead:
                    continue
                self.store.move_ready(txn, message_id, delivery.visible_ms, None)
                delivery.acked = True
                self.store.put_delivery(txn, message_id, delivery)
                self.store.add_stat(txn, delivery.journey_id, "delivered")
                acked += 1
        return acked

    def stats(self, journey_id: str) -> journey_pb2.JourneyStats:
        check_id(journey_id, "journey_id")
        with self.store.read() as txn:
            values = self.store.stats(txn, journey_id)
            known = any(j.journey_id == journey_id for j in self.store.journeys(txn))
        if not values and not known:
            raise NotFound(f"no journey {journey_id!r}; ListJourneys shows the defined ones")
        out = journey_pb2.JourneyStats()
        for name in ("entered", "sent", "cancelled", "suppressed", "opened", "clicked", "converted", "pending",
                     "delivered"):
            setattr(out, name, int(values.get(name, 0)))
        out.revenue = float(values.get("revenue", 0.0))
        out.dead_lettered = int(values.get("dead_lettered", 0))
        for name, value in values.items():
            if name.startswith("suppressed:"):
                out.suppressed_by_reason[name.split(":", 1)[1]] = int(value)
            elif name.startswith("cancelled:"):
                out.cancelled_by_reason[name.split(":", 1)[1]] = int(value)
        return out

    def user_messages(self, user_id: str, limit: int) -> list[journey_pb2.Message]:
        check_id(user_id, "user_id")
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        limit = min(limit or C.MAX_USER_MESSAGES, C.MAX_USER_MESSAGES)
        out = []
        with self.store.read() as txn:
            for message_id in self.store.user_message_ids(txn, user_id)[:limit]:
                message = self.store.message(txn, message_id)
                delivery = self.store.delivery(txn, message_id)
                if message is not None:
                    message.delivery_attempt = delivery.attempts if delivery else 0
                    out.append(message)
        return out
