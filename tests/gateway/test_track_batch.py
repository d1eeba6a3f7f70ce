"""Gateway TrackBatch through the real gateway server: one shard (forwarded as it is) and three
fake shards (split by the jump hash, summaries merged with the caller's indices, a shard that is
down leaves only its own events unacknowledged)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.config import ServerConfig
from services.common.server import RunningServer, build_server
from services.gateway.app import GatewayService
from services.gateway.config import MAX_BATCH_EVENTS
from services.gateway.router import jump_hash, stable_key
from tests.gateway.conftest import FakeSuite, gateway_config
from tests.support import assert_status
from vitrine.loadtest.fakes import FakeProfile, FakeRecommendation, FakeSegmentation
from vitrine.v1 import common_pb2, gateway_pb2_grpc, profile_pb2

SHARDS = 3


def view(event_id: str, user_id: str) -> common_pb2.Event:
    return common_pb2.Event(event_id=event_id, user_id=user_id, type=common_pb2.PRODUCT_VIEW, product_id="p1",
                            timestamp_ms=1_700_000_000_000)


async def test_one_shard_forwards_the_batch(fake_suite: FakeSuite) -> None:
    events = [view(f"e{i}", f"u{i % 4}") for i in range(10)] + [view("", "u1"), view("e3", "u3")]
    summary = await fake_suite.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (10, 1, 1)
    assert list(summary.errors) == ["event 10 (): event.event_id is required"]
    assert [e.event_id for e in fake_suite.profile.batched] == [f"e{i}" for i in range(10)]


async def test_too_many_events_is_invalid_argument(fake_suite: FakeSuite) -> None:
    events = [view(f"e{i}", "u1") for i in range(MAX_BATCH_EVENTS + 1)]
    err = await assert_status(fake_suite.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert str(MAX_BATCH_EVENTS) in (err.details() or "")
    assert not fake_suite.profile.batched


async def test_one_shard_down_is_the_callers_error(fake_suite: FakeSuite) -> None:
    fake_suite.profile.faults.code = grpc.StatusCode.UNAVAILABLE
    await assert_status(fake_suite.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=[view("e1", "u1")]),
                                                   timeout=10), grpc.StatusCode.UNAVAILABLE)


class Sharded:
    def __init__(self, shards: list[FakeProfile], servers: list[RunningServer], others: list[RunningServer],
                 gateway: RunningServer, channel: grpc.aio.Channel) -> None:
        self.shards, self.servers, self.others, self.gateway, self.channel = shards, servers, others, gateway, channel
        self.stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)


@pytest.fixture
async def sharded() -> AsyncIterator[Sharded]:
    shards = [FakeProfile() for _ in range(SHARDS)]
    servers = [await build_server(ServerConfig(port=0), shard) for shard in shards]
    others = [await build_server(ServerConfig(port=0), FakeSegmentation()),
              await build_server(ServerConfig(port=0), FakeRecommendation())]
    config = gateway_config(profile_addresses=",".join(s.address for s in servers),
                            segmentation_address=others[0].address, recommendation_address=others[1].address)
    gateway = await build_server(config, GatewayService(config))
    channel = grpc.aio.insecure_channel(gateway.address)
    suite = Sharded(shards, servers, others, gateway, channel)
    try:
        yield suite
    finally:
        await channel.close()
        await gateway.stop(0)
        for running in (*suite.servers, *others):
            await running.stop(0)


def users_per_shard() -> dict[int, str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < SHARDS:
        found.setdefault(jump_hash(stable_key(f"user-{i}"), SHARDS), f"user-{i}")
        i += 1
    return found


async def test_events_go_to_their_shard_and_summaries_merge(sharded: Sharded) -> None:
    users = users_per_shard()
    order = [users[i % SHARDS] for i in range(30)]
    events = [view(f"e{i}", user) for i, user in enumerate(order)]
    events[7].event_id = ""  # rejected by its shard; the error names the caller's index 7
    summary = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (29, 0, 1)
    assert list(summary.errors) == ["event 7 (): event.event_id is required"]
    for shard, fake in enumerate(sharded.shards):
        assert {e.user_id for e in fake.batched} == {users[shard]}
        # Within a shard the caller's order is kept.
        assert [e.event_id for e in fake.batched] == [f"e{i}" for i in range(30) if i % SHARDS == shard and i != 7]
    again = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 29, 1)


@pytest.mark.parametrize("fails", ["alias lookup", "batch"])
async def test_a_shard_down_leaves_only_its_events_unacknowledged(sharded: Sharded, fails: str) -> None:
    users = users_per_shard()
    if fails == "batch":  # the ids are known (cached): the shard's TrackBatch itself fails
        service = sharded.gateway.service
        assert isinstance(service, GatewayService) and service.router is not None
        for user in users.values():
            service.router.aliases.put(user, user)
    sharded.shards[1].faults.code = grpc.StatusCode.UNAVAILABLE
    events = [view(f"e{i}", users[i % SHARDS]) for i in range(9)]
    summary = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.rejected) == (6, 3)
    assert [m.split(":")[0] for m in summary.errors] == ["event 1 (e1)", "event 4 (e4)", "event 7 (e7)"]
    assert all("profile shard 1 UNAVAILABLE" in m and "safe to resend" in m for m in summary.errors)
    assert not sharded.shards[1].batched
    # Resending the whole batch once the shard is back applies exactly the missing ones.
    sharded.shards[1].faults.clear()
    summary = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (3, 6, 0)


async def test_every_shard_down_is_the_callers_error(sharded: Sharded) -> None:
    for fake in sharded.shards:
        fake.faults.code = grpc.StatusCode.UNAVAILABLE
    users = users_per_shard()
    events = [view(f"e{i}", users[i % SHARDS]) for i in range(6)]
    await assert_status(sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10),
                        grpc.StatusCode.UNAVAILABLE)


async def test_an_empty_batch_is_an_empty_summary(sharded: Sharded) -> None:
    summary = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(), timeout=10)
    assert summary == profile_pb2.TrackSummary()
