"""What the profile service and every feed consumer need from the event log.

Items are `LoggedEvent`s with `canonical_user_id` set (the partition key); `seq` is their log
position, filled in on reading. Two implementations: `lmdb_log.LmdbEventLog` (the embedded
default, the profile engine's own LMDB log, unchanged) and `jetstream.JetStreamLog` (NATS
JetStream, the system of record beyond one machine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from vitrine.v1 import profile_pb2


@dataclasses.dataclass(frozen=True)
class Appended:
    seq: int          # the item's log position
    duplicate: bool   # the log already held this event_id (nothing was appended)


class EventLog(Protocol):
    async def append(self, items: Sequence[profile_pb2.LoggedEvent]) -> list[Appended]:
        """Append event items; returns once each is durable (JetStream: acknowledged by its
        replicas), in the order given."""
        ...

    def follow(self, from_seq: int, partition: int | None = None) -> AsyncIterator[list[profile_pb2.LoggedEvent]]:
        """The log from `from_seq` (0 = the oldest kept) in order, then live, in batches
        (never empty). `partition` restricts it to one partition (scale-out shards)."""
        ...

    async def erase(self, user_ids: Sequence[str], erased_ms: int) -> int:
        """Append an Erasure of the shopper (`user_ids[0]` canonical, the rest aliases) and make
        their earlier items unreadable; returns the Erasure's position."""
        ...

    async def close(self) -> None: ...
