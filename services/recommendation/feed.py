"""The real-time signals follow the event log: every profile shard's `FollowEvents` feed, through the
shared follower (`services/common/follow.py`), one `Follower` per shard.

`EventSignals` is the domain side, a plain class fed with `LoggedEvent`s (and, until the gateway
stops sending them, with `Observe` events): events feed trending and bought-together, an `Identity`
moves a visitor's open baskets to the customer, an `Erasure` drops the shopper's baskets (the only
per-shopper data the service keeps), and events of a shopper without personalization consent are
left out. It keeps each shard's cursor in step with the in-memory state; the service saves both in
one LMDB transaction (`store.py`), so a restart resumes each feed where the saved state ends.
`SignalFeeds` runs the followers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.common.channel import channel_for
from services.common.config import ServerConfig
from services.common.follow import Follower, FollowerGroup
from services.recommendation.catalog import Catalog
from services.recommendation.config import FOLLOW_EVENTS_BATCH, MAX_SUMMARY_ERRORS
from services.recommendation.metrics import SIGNAL_ERASURES
from services.recommendation.signals import WEIGHTS, Signals
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

FEED_NAME = "recommendation-signals"


@dataclass
class ObserveResult:
    observed: int = 0
    ignored: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class FeedBatch:
    """What one batch of feed items did."""

    observed: int = 0
    ignored: int = 0
    erasures: int = 0
    identities: int = 0


class EventSignals:
    def __init__(self, catalog: Catalog, signals: Signals) -> None:
        self.catalog = catalog
        self.signals = signals
        self.cursors: dict[str, int] = {}   # source -> next seq, matching the in-memory state
        # Events of a source without a cursor older than this are already in the state: set when the
        # state came from a snapshot written before the feed (Observe counted them), so the first
        # replay of the log does not count them again.
        self.counted_before_ms = 0
        self._saved_sources: frozenset[str] = frozenset()

    def resume(self, cursors: dict[str, int], counted_before_ms: int = 0) -> None:
        """Continue from saved cursors; `counted_before_ms` for a state older than the feed."""
        self.cursors = dict(cursors)
        self._saved_sources = frozenset(cursors)
        self.counted_before_ms = counted_before_ms

    def _valid(self, event: common_pb2.Event) -> tuple[int, int] | bool | str:
        """(row, category) of an event that carries a signal; False if it carries none (a type
        without weight, a product not in the catalog yet), else why it is malformed."""
        if event.type not in WEIGHTS:
            return False
        if not event.product_id:
            return f"{common_pb2.EventType.Name(event.type)} needs product_id"
        row = self.catalog.row_of.get(event.product_id)
        if row is None:
            return False
        return row, int(self.catalog.category[row])

    def observe(self, events: Sequence[common_pb2.Event], result: ObserveResult, start: int = 0, *,
                feed_live: bool = False) -> None:
        """The `Observe` path: events counted into `result` (errors name their position). With
        `feed_live` an event without event_id is left to the feed: the profile gives it an id there, so
        counting it here too would count it twice (events with ids are deduplicated either way)."""
        run: list[tuple[common_pb2.Event, int, int, str]] = []
        for i, event in enumerate(events, start):
            valid = self._valid(event)
            if isinstance(valid, tuple) and feed_live and not event.event_id:
                result.ignored += 1
            elif isinstance(valid, tuple):
                run.append((event, valid[0], valid[1], ""))
            elif valid is False:
                result.ignored += 1
            else:
                result.rejected += 1
                if len(result.errors) < MAX_SUMMARY_ERRORS:
                    result.errors.append(f"event {i} ({event.event_id[:64]}): {valid}")
        counted = self.signals.observe_many(run)
        result.observed += counted
        result.ignored += len(run) - counted   # repeated event ids

    def _counted_already(self, source: str, event: common_pb2.Event) -> bool:
        return (self.counted_before_ms > 0 and source not in self._saved_sources
                and 0 < event.timestamp_ms < self.counted_before_ms)

    def apply(self, source: str, items: Sequence[profile_pb2.LoggedEvent]) -> FeedBatch:
        """One batch of a shard's feed, in order; the source's cursor moves past the last item.
        Events between two identity or erasure items are counted in one call."""
        batch = FeedBatch()
        run: list[tuple[common_pb2.Event, int, int, str]] = []

        def flush() -> None:
            counted = self.signals.observe_many(run)
            batch.observed += counted
            batch.ignored += len(run) - counted
            run.clear()

        for item in items:
            which = item.WhichOneof("item")
            if which == "event":
                # no consent: no behavioural signal; malformed events never reach the log
                valid = (self._valid(item.event) if not item.personalization_off
                         and not self._counted_already(source, item.event) else False)
                if isinstance(valid, tuple):
                    run.append((item.event, valid[0], valid[1], item.canonical_user_id))
                else:
                    batch.ignored += 1
                continue
            flush()   # identities and erasures apply after the events before them
            if which == "erasure":
                erasure = item.erasure
                self.signals.erase([erasure.user_id, *erasure.aliases, item.canonical_user_id])
                batch.erasures += 1
                SIGNAL_ERASURES.inc()
            elif which == "identity":
                self.signals.merge_user(item.identity.anonymous_id, item.identity.customer_id)
                batch.identities += 1
        flush()
        if items:
            self.cursors[source] = items[-1].seq + 1
        return batch


class _ShardCursor:
    """The follower's view of one shard's cursor (the next seq; 0 = from the oldest kept)."""

    def __init__(self, signals: EventSignals, source: str) -> None:
        self.signals, self.source = signals, source

    def load(self) -> int:
        return self.signals.cursors.get(self.source, 0)


def _items_of(batch: profile_pb2.LoggedEventBatch) -> Sequence[profile_pb2.LoggedEvent]:
    return batch.items


def _time_of(item: profile_pb2.LoggedEvent) -> int:
    return item.event.timestamp_ms if item.HasField("event") else 0


class SignalFeeds(FollowerGroup):
    """Followers of every profile shard feeding one `EventSignals`. The source of shard i is "i" (its
    place in profile_addresses). `on_erasure` runs after a batch that erased a shopper (the service
    saves the state then, so the erasure reaches the disk at once)."""

    def __init__(self, signals: EventSignals, addresses: Sequence[str], config: ServerConfig,
                 on_erasure: Callable[[], Awaitable[None]], batch: int = FOLLOW_EVENTS_BATCH) -> None:
        super().__init__("signals feed", [channel_for(a, config) for a in addresses])
        for i, channel in enumerate(self.channels):
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            source = str(i)

            def open_stream(seq: int, stub: profile_pb2_grpc.ProfileServiceStub = stub) -> object:
                # Batched: one gRPC message per item caps a reader near 6k items/s, below ingest.
                return stub.FollowEventBatches(profile_pb2.FollowEventsRequest(from_seq=seq, max_batch=batch))

            async def apply(items: Sequence[profile_pb2.LoggedEvent], source: str = source) -> None:
                if signals.apply(source, items).erasures:
                    await on_erasure()

            self.followers.append(Follower(f"{FEED_NAME}-{i}", open_stream, _ShardCursor(signals, source),
                                           on_batch=apply, time_of=_time_of, max_batch=batch,
                                           items_of=_items_of))

    @property
    def live(self) -> bool:
        """True while every shard's stream is open (its events reach the signals through the feed)."""
        return bool(self.followers) and all(f.stats.connected for f in self.followers)
