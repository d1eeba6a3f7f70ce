"""Experiment results follow the event log of every profile shard (ProfileService.FollowEvents)
through the shared follower (services/common/follow.py), one Follower per shard.

Each shard's log has its own seqs, so each has its own cursor, stored by ExperimentResults in
the same LMDB write transaction as the state derived from the batch (exactly once across
restarts and reconnects)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.common.channel import channel_for
from services.common.config import ServerConfig
from services.common.follow import Follower, FollowerGroup
from services.segmentation.results import ExperimentResults
from vitrine.v1 import profile_pb2, profile_pb2_grpc

FEED_NAME = "segmentation-experiments"


class _ShardCursor:
    """The follower's view of a shard's cursor: the next seq to ask for (0 = from the oldest kept)."""

    def __init__(self, results: ExperimentResults, source: str) -> None:
        self.results, self.source = results, source

    def load(self) -> int:
        last = self.results.cursor(self.source)
        return last + 1 if last else 0


def _time_of(item: profile_pb2.LoggedEvent) -> int:
    return item.event.timestamp_ms if item.HasField("event") else 0


def _items_of(batch: profile_pb2.LoggedEventBatch) -> Sequence[profile_pb2.LoggedEvent]:
    return batch.items


class ResultsFeed(FollowerGroup):
    """Followers of every profile shard feeding one ExperimentResults."""

    def __init__(self, results: ExperimentResults, addresses: Sequence[str], config: ServerConfig,
                 batch: int) -> None:
        super().__init__("results feed", [channel_for(a, config) for a in addresses])
        self.results = results
        for i, channel in enumerate(self.channels):
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            source = str(i)   # the shard's place in profile_addresses

            def open_stream(seq: int, stub: profile_pb2_grpc.ProfileServiceStub = stub) -> object:
                # Batched: one gRPC message per item caps a reader near 6k items/s, below ingest.
                return stub.FollowEventBatches(profile_pb2.FollowEventsRequest(from_seq=seq, max_batch=batch))

            async def apply(items: Sequence[profile_pb2.LoggedEvent], source: str = source) -> None:
                await asyncio.to_thread(results.apply, items, source)

            self.followers.append(Follower(f"{FEED_NAME}-{i}", open_stream, _ShardCursor(results, source),
                                           on_batch=apply, time_of=_time_of, max_batch=batch,
                                           items_of=_items_of))

    async def wait_for(self, cursors: Sequence[int], seconds: float) -> None:
        """Until shard i's items below cursors[i] are applied (tests, the simulator)."""
        async with asyncio.timeout(seconds):
            for follower, cursor in zip(self.followers, cursors, strict=True):
                await follower.wait_for_cursor(cursor)
