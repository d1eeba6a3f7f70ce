"""The journeys service follows every profile shard's event feed (FollowEventBatches) and the catalog feed through the
shared follower (services/common/follow.py). Each handler applies a batch and its cursor in one
LMDB transaction (feed.py), so a restart resumes exactly after the last committed batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.common.channel import channel_for
from services.common.follow import Follower, FollowerGroup
from services.journeys import config as C
from services.journeys.config import JourneysConfig
from services.journeys.engine import JourneyEngine
from vitrine.v1 import profile_pb2, profile_pb2_grpc, recommend_pb2, recommend_pb2_grpc


class _Cursor:
    def __init__(self, load: Callable[[], int]) -> None:
        self.load = load


def _event_time(item: profile_pb2.LoggedEvent) -> int:
    return item.event.timestamp_ms if item.HasField("event") else 0


def _items(batch: profile_pb2.LoggedEventBatch) -> Sequence[profile_pb2.LoggedEvent]:
    return batch.items


class Feeds(FollowerGroup):
    def __init__(self, engine: JourneyEngine, config: JourneysConfig) -> None:
        super().__init__("journeys feed")
        self.event_followers: list[Follower[profile_pb2.LoggedEvent]] = []
        for source, address in enumerate(config.profile_targets()):
            channel = channel_for(address, config)
            self.channels.append(channel)
            stub = profile_pb2_grpc.ProfileServiceStub(channel)

            def open_events(seq: int, stub: profile_pb2_grpc.ProfileServiceStub = stub) -> object:
                # Grouped items: one gRPC message per log read, far cheaper than one per item.
                return stub.FollowEventBatches(profile_pb2.FollowEventsRequest(from_seq=seq,
                                                                               max_batch=C.FEED_BATCH))

            async def apply(items: Sequence[profile_pb2.LoggedEvent], source: int = source) -> None:
                await engine.apply_events_async(items, source)

            def load(source: int = source) -> int:
                return engine.events_cursor(source)

            self.event_followers.append(Follower(
                f"journeys-events-{source}", open_events,
                _Cursor(load),
                on_batch=apply, time_of=_event_time, max_batch=C.FEED_BATCH, items_of=_items))
        channel = channel_for(config.recommendation_address, config)
        self.channels.append(channel)
        catalog = recommend_pb2_grpc.RecommendServiceStub(channel)

        async def apply_catalog(items: Sequence[recommend_pb2.CatalogChange]) -> None:
            await engine.apply_catalog_async(items)

        def open_catalog(seq: int) -> object:
            return catalog.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=seq))

        self.catalog_follower: Follower[recommend_pb2.CatalogChange] = Follower(
            "journeys-catalog", open_catalog, _Cursor(engine.catalog_cursor), on_batch=apply_catalog,
            time_of=lambda change: change.changed_ms, max_batch=C.FEED_BATCH)
        self.followers.extend([*self.event_followers, self.catalog_follower])
