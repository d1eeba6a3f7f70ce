"""Resharding 2 -> 3 profile shards under Track traffic (in-process gRPC servers, real nats-server):
a new shard 2 starts, then shards 0 and 1 restart one at a time with the new count. New owners
rebuild the partitions they gained from the stream, old owners drop the ones they lost; no
acknowledged event is lost and each shopper is served by their new owner, whose LMDB equals the
embedded fold of exactly the acknowledged events of its shoppers."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

from services.eventlog.partitions import partition_of
from services.profile.app import ProfileService
from services.profile.store import LmdbProfileStore
from tests.eventlog.helpers import event, profiles
from tests.eventlog.test_profile_scaleout import shard_config
from tests.support import channel_to, serving
from vitrine.nats_server import NatsNode
from vitrine.v1 import profile_pb2, profile_pb2_grpc

PARTITIONS = 6
USERS = 15
MAX_EVENTS = 5_000
STALL_S = 60.0


def owner(user_id: str, count: int) -> int:
    return partition_of(user_id, PARTITIONS) % count


class Shard:
    def __init__(self, path: Path, url: str, index: int, count: int) -> None:
        self.path, self.url, self.index, self.count = path, url, index, count
        self.stack = contextlib.AsyncExitStack()
        self.stub: profile_pb2_grpc.ProfileServiceStub | None = None
        self.service: ProfileService | None = None

    async def start(self) -> None:
        config = shard_config(self.path, self.url, self.index, self.count)
        config = type(config)(**{**config.__dict__, "event_log_partitions": PARTITIONS})
        self.service = ProfileService(config)
        running = await self.stack.enter_async_context(serving(self.service, config))
        channel = await self.stack.enter_async_context(channel_to(running))
        self.stub = profile_pb2_grpc.ProfileServiceStub(channel)

    async def stop(self) -> None:
        self.stub = None
        await self.stack.aclose()
        self.stack = contextlib.AsyncExitStack()


async def traffic(shards: list[Shard], acked: dict[int, int], stop: asyncio.Event,
                  refused: dict[int, str]) -> None:
    """Tracks one at a time to any shard that is up (any shard appends), retried on error; the
    last error of each shard is kept in `refused` (what a stall is reported with)."""
    target = 0
    for i in range(MAX_EVENTS):
        while not stop.is_set():
            target = (target + 1) % len(shards)
            stub = shards[target].stub
            if stub is None:
                await asyncio.sleep(0)
                continue
            try:
                # Bounded here too: a call in flight when its shard's channel closes may never end.
                reply = await asyncio.wait_for(stub.Track(profile_pb2.TrackRequest(event=event(i, USERS)),
                                                          timeout=3), 4)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, TimeoutError) as err:  # UsageError: channel closed
                refused[target] = err.code().name if isinstance(err, grpc.aio.AioRpcError) else type(err).__name__
                await asyncio.sleep(0.02)
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # this task is being cancelled
                    raise
                # grpc.aio cancels a call in flight when its channel is closed (its shard stopped
                # under it): for this client, the same as a refused call.
                refused[target] = "call cancelled by its channel's close"
                continue
            acked[i] = reply.seq
            await asyncio.sleep(0.002)
            break
        if stop.is_set():
            return


async def more(acked: dict[int, int], n: int, refused: dict[int, str], bound_s: float = STALL_S) -> None:
    """Until `n` more events are acknowledged. The bound is generous: on a machine loaded by the
    rest of the suite a shard's restart (its consumers re-created, its partitions rebuilt) takes
    seconds, and Track must only keep going, not be fast."""
    goal = len(acked) + n
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while loop.time() < deadline:
        if len(acked) >= goal:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"traffic stalled at {len(acked)} acknowledged events (goal {goal}) for {bound_s:g} s; "
                         f"last error per shard: {refused}")


async def test_two_to_three_shards_under_traffic(nats_node: NatsNode, tmp_path: Path) -> None:
    users = {event(i, USERS).user_id for i in range(USERS)}
    assert {u for u in users if owner(u, 2) != owner(u, 3)}, "no shopper would move: the test would prove nothing"
    shards = [Shard(tmp_path / f"shard{i}", nats_node.url, i, 2) for i in range(2)]
    for shard in shards:
        await shard.start()
    acked: dict[int, int] = {}
    refused: dict[int, str] = {}
    stop = asyncio.Event()
    writer = asyncio.create_task(traffic(shards, acked, stop, refused))
    try:
        await more(acked, 60, refused)
        shards.append(Shard(tmp_path / "shard2", nats_node.url, 2, 3))
        await shards[2].start()  # gains partition 2 from shard 0: rebuilt from the stream
        await more(acked, 40, refused)
        for shard in shards[:2]:  # rolling restart with the new count
            await shard.stop()
            shard.count = 3
            await more(acked, 10, refused)
            await shard.start()
            await more(acked, 40, refused)
    finally:
        stop.set()
        await writer
    try:
        last: dict[str, int] = {}
        for i, seq in acked.items():
            user = event(i, USERS).user_id
            last[user] = max(last.get(user, 0), seq)
        for user, seq in last.items():
            stub = shards[owner(user, 3)].stub
            assert stub is not None
            profile = await stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user, min_seq=seq), timeout=30)
            assert profile.event_count == sum(1 for i in acked if event(i, USERS).user_id == user)
        stores = {s.index: s.service.engine.store for s in shards if s.service is not None}
        reference = LmdbProfileStore(tmp_path / "reference", map_size_mb=64)
        try:
            reference.apply_events([event(i, USERS) for i, _ in sorted(acked.items(), key=lambda kv: kv[1])], 0)
            expected = profiles(reference)
        finally:
            reference.close()
        for index, store in stores.items():
            assert profiles(store) == {u: p for u, p in expected.items() if owner(u, 3) == index}, \
                f"shard {index} does not hold exactly its shoppers' folded events"
    finally:
        for shard in shards:
            await shard.stop()
