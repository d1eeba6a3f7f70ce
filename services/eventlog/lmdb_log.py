"""The embedded default: the profile engine's own LMDB log behind the EventLog interface.

Appending goes through the engine (fold + log + idempotency key in one LMDB transaction, as
before); following is the engine's FollowEventBatches; erasure is DeleteProfile, which redacts
the log. Behaviour is the profile service's, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from services.eventlog.protocol import Appended
from services.profile.engine import ProfileEngine
from vitrine.v1 import profile_pb2


class LmdbEventLog:
    def __init__(self, engine: ProfileEngine) -> None:
        self.engine = engine

    async def append(self, items: Sequence[profile_pb2.LoggedEvent]) -> list[Appended]:
        # Concurrent Tracks share one group commit.
        results = await asyncio.gather(*(self.engine.track(self.engine.validate(item.event)) for item in items))
        return [Appended(r.seq, not r.applied) for r in results]

    def follow(self, from_seq: int, partition: int | None = None) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        if partition is not None:
            raise ValueError("the embedded log has no partitions")
        return self.engine.follow_event_batches(from_seq)

    async def erase(self, user_ids: Sequence[str], erased_ms: int) -> int:
        await self.engine.delete(user_ids[0])
        return self.engine.store.log_bounds()[1]

    async def close(self) -> None:
        return None
