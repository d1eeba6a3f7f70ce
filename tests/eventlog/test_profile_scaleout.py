"""The profile service in scale-out mode (--event-log) through real in-process gRPC servers on a
real nats-server: two shards, Tracks to either shard answered after JetStream's ack with the
position, reads on the owner waiting for that position, FollowEvents serving the stream,
erasure through the log, and the writes this mode cannot keep yet refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from services.eventlog.partitions import partition_of
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from tests.eventlog.helpers import event
from tests.support import assert_status, channel_to, serving
from vitrine.nats_server import NatsNode
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

PARTITIONS = 4
SHARDS = 2


def shard_config(data_dir: Path, url: str, index: int, count: int = SHARDS) -> ProfileConfig:
    return ProfileConfig(port=0, data_dir=str(data_dir), purge_interval_seconds=0.0, event_log=url,
                         shard_index=index, shard_count=count, event_log_partitions=PARTITIONS)


@contextlib.asynccontextmanager
async def shards(tmp_path: Path, url: str) -> AsyncIterator[list[profile_pb2_grpc.ProfileServiceStub]]:
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for i in range(SHARDS):
            service = ProfileService(shard_config(tmp_path / f"shard{i}", url, i))
            running = await stack.enter_async_context(serving(service, service.config))
            channel = await stack.enter_async_context(channel_to(running))
            stubs.append(profile_pb2_grpc.ProfileServiceStub(channel))
        yield stubs


async def follow(stub: profile_pb2_grpc.ProfileServiceStub, n: int) -> list[profile_pb2.LoggedEvent]:
    """The first `n` items of a shard's FollowEvents from the start."""
    call = stub.FollowEvents(profile_pb2.FollowEventsRequest(from_seq=0))
    items: list[profile_pb2.LoggedEvent] = []
    async for item in call:
        items.append(item)
        if len(items) == n:
            break
    call.cancel()
    return items


def owner(user_id: str) -> int:
    return partition_of(user_id, PARTITIONS) % SHARDS


async def test_scale_out_profile_service(nats_node: NatsNode, tmp_path: Path) -> None:
    async with shards(tmp_path, nats_node.url) as stubs:
        # Track to shard 0 for every shopper: any shard appends; the answer carries the position.
        answers = [await stubs[0].Track(profile_pb2.TrackRequest(event=event(i))) for i in range(10)]
        assert [a.seq for a in answers] == list(range(1, 11)) and all(a.applied for a in answers)
        again = await stubs[1].Track(profile_pb2.TrackRequest(event=event(3)))
        assert (again.applied, again.seq) == (False, 4)  # a retry: JetStream de-duplicated it

        # TrackBatch: bad events rejected with reasons, the good ones appended.
        bad = common_pb2.Event(event_id="bad", user_id="shopper-1")  # no type, no timestamp
        summary = await stubs[1].TrackBatch(profile_pb2.TrackBatchRequest(events=[event(10), bad, event(11)]))
        assert (summary.accepted, summary.rejected, summary.duplicates) == (2, 1, 0) and summary.errors

        async def stream() -> AsyncIterator[common_pb2.Event]:
            for i in range(12, 40):
                yield event(i)
        summary = await stubs[0].TrackStream(stream())
        assert (summary.accepted, summary.rejected) == (28, 0)
        last = await stubs[0].Track(profile_pb2.TrackRequest(event=event(40)))

        # Read-your-writes on the owner; a non-owner refuses with the owner's index.
        user = event(40).user_id
        profile = await stubs[owner(user)].GetProfile(profile_pb2.GetProfileRequest(user_id=user, min_seq=last.seq))
        assert profile.event_count == sum(1 for i in range(41) if event(i).user_id == user)
        err = await assert_status(stubs[1 - owner(user)].GetProfile(profile_pb2.GetProfileRequest(user_id=user)),
                                  grpc.StatusCode.FAILED_PRECONDITION)
        assert f"owned by shard {owner(user)}" in (err.details() or "")
        await assert_status(stubs[owner(user)].GetProfile(profile_pb2.GetProfileRequest(user_id=user,
                                                                                        min_seq=10_000)),
                            grpc.StatusCode.UNAVAILABLE)

        # Erasure through the log: an item of the stream, the profile gone on its owner.
        erased = event(0).user_id
        deleted = await stubs[owner(erased)].DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=erased))
        assert deleted.deleted
        await assert_status(stubs[owner(erased)].GetProfile(profile_pb2.GetProfileRequest(user_id=erased)),
                            grpc.StatusCode.NOT_FOUND)

        # FollowEvents on each shard serves the stream's items of its partitions, in stream order,
        # the erasure included (the erased shopper's events were purged from the stream): across
        # the shards every kept item exactly once.
        kept = {event(i).event_id for i in range(41) if event(i).user_id != erased}
        seen: list[str] = []
        for shard, stub in enumerate(stubs):
            expected = {event(i).event_id for i in range(41)
                        if event(i).event_id in kept and owner(event(i).user_id) == shard}
            want = len(expected) + (owner(erased) == shard)
            items = await asyncio.wait_for(follow(stub, want), 20)
            seqs = [it.seq for it in items]
            assert seqs == sorted(set(seqs))
            assert {it.event.event_id for it in items if it.WhichOneof("item") == "event"} == expected
            assert all(owner(it.canonical_user_id) == shard for it in items)
            if owner(erased) == shard:
                assert items[-1].erasure.user_id == erased
            seen += [it.event.event_id for it in items if it.WhichOneof("item") == "event"]
        assert sorted(seen) == sorted(kept)

        # Writes this mode cannot keep yet are refused, not silently lost on a rebuild.
        await assert_status(stubs[0].Identify(profile_pb2.IdentifyRequest(anonymous_id="a", customer_id="c")),
                            grpc.StatusCode.FAILED_PRECONDITION)
        await assert_status(stubs[0].SetConsent(profile_pb2.SetConsentRequest(user_id=user)),
                            grpc.StatusCode.FAILED_PRECONDITION)
