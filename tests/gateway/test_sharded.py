"""The gateway in front of THREE real profile shards: routing by jump hash, cross-shard
Identify (the anonymous shard keeps only an alias), erasure on the right shard, and
Personalize through the sharded router."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from services.gateway.router import jump_hash, stable_key
from tests.gateway.real import RealSuite, real_suite
from tests.support import assert_status
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")
SHARDS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sharded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealSuite]:
    async with real_suite(Path(tmp_path_factory.mktemp("sharded")), shards=SHARDS) as suite:
        yield suite


def shard_of(user_id: str) -> int:
    return jump_hash(stable_key(user_id), SHARDS)


async def on_shard(suite: RealSuite, shard: int, user_id: str) -> common_pb2.Profile | None:
    try:
        return await suite.shard_stub(shard).GetProfile(profile_pb2.GetProfileRequest(user_id=user_id), timeout=5)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return None


def view(event_id: str, user_id: str, product_id: str = "p000007") -> profile_pb2.TrackRequest:
    return profile_pb2.TrackRequest(event=common_pb2.Event(
        event_id=event_id, user_id=user_id, type=common_pb2.PRODUCT_VIEW, product_id=product_id,
        timestamp_ms=int(time.time() * 1000)))


async def require_alias_rpcs(suite: RealSuite) -> None:
    """The shard router needs ResolveAlias and GetUserEvents: UNIMPLEMENTED is a failure, not a skip."""
    try:
        await suite.shard_stub(0).ResolveAlias(profile_pb2.ResolveAliasRequest(user_id="x"), timeout=5)
        await suite.shard_stub(0).GetUserEvents(profile_pb2.GetUserEventsRequest(user_id="x"), timeout=5).read()
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.fail(f"the profile service answers UNIMPLEMENTED ({err.details()}): the shard router "
                        "needs ResolveAlias and GetUserEvents (see services/gateway/README.md)")
        # Any other answer (NOT_FOUND for the unknown "x") means the RPCs are there.


async def test_each_shopper_lives_on_its_hashed_shard(sharded: RealSuite) -> None:
    users = [f"route-{i}" for i in range(30)]
    for i, user in enumerate(users):
        assert (await sharded.stub.Track(view(f"route-e{i}", user), timeout=5)).applied
    assert {shard_of(u) for u in users} == set(range(SHARDS))
    for user in users:
        home = shard_of(user)
        for shard in range(SHARDS):
            assert (await on_shard(sharded, shard, user) is not None) == (shard == home), (user, shard)
        assert (await sharded.stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=5)).user_id == user
    # The demo loader routed its shoppers with the same function: every shard holds some.
    for shard in range(SHARDS):
        count = 0
        async for profile in sharded.shard_stub(shard).ScanProfiles(profile_pb2.ScanProfilesRequest(limit=500),
                                                                      timeout=10):
            assert shard_of(profile.user_id) == shard
            count += 1
        assert count > 0


async def test_cross_shard_identify_and_erasure(sharded: RealSuite) -> None:
    await require_alias_rpcs(sharded)
    anon = "anon-xs-1"
    customer = next(f"cust-xs-{i}" for i in range(100) if shard_of(f"cust-xs-{i}") != shard_of(anon))
    a, c = shard_of(anon), shard_of(customer)
    for i in range(3):
        await sharded.stub.Track(view(f"xs-a{i}", anon, f"p00000{i}"), timeout=5)
    await sharded.stub.Track(view("xs-c0", customer, "p000009"), timeout=5)

    merged = await sharded.stub.Identify(profile_pb2.IdentifyRequest(
        anonymous_id=anon, customer_id=customer, traits={"plan": "gold"}), timeout=10)
    assert merged.user_id == customer and merged.registered and merged.event_count == 4
    assert anon in merged.aliases and merged.traits["plan"] == "gold"
    # The anonymous shard keeps only an alias; the customer's shard has everything.
    assert await on_shard(sharded, a, anon) is None
    alias = await sharded.shard_stub(a).ResolveAlias(profile_pb2.ResolveAliasRequest(user_id=anon), timeout=5)
    assert alias.target_id == customer
    assert (await on_shard(sharded, c, customer)).event_count == 4
    # Reads by either id give the merged profile, also through a router with a cold cache.
    sharded.service.router.aliases.drop(anon)
    for user in (anon, customer):
        profile = await sharded.stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=5)
        assert profile.user_id == customer and profile.event_count == 4
    # A later event by the anonymous id lands on the customer's profile.
    sharded.service.router.aliases.drop(anon)
    reply = await sharded.stub.Track(view("xs-a9", anon), timeout=5)
    assert reply.applied and reply.user_id == customer
    assert (await on_shard(sharded, c, customer)).event_count == 5
    assert await on_shard(sharded, a, anon) is None
    # Personalize by the anonymous id is personalized from the merged profile.
    answer = await sharded.stub.Personalize(gateway_pb2.PersonalizeRequest(user_id=anon, page_type="home"),
                                            timeout=5)
    assert answer.personalized and answer.fallback_reason == ""

    # Erasure by the customer id removes the profile and the alias left on the other shard.
    deleted = await sharded.stub.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=customer), timeout=10)
    assert deleted.deleted
    assert await on_shard(sharded, c, customer) is None
    alias = await sharded.shard_stub(a).ResolveAlias(profile_pb2.ResolveAliasRequest(user_id=anon), timeout=5)
    assert alias.target_id == ""
    for user in (anon, customer):
        await assert_status(sharded.stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=5),
                            grpc.StatusCode.NOT_FOUND)
    answer = await sharded.stub.Personalize(gateway_pb2.PersonalizeRequest(user_id=anon, page_type="home"),
                                            timeout=5)
    assert answer.fallback_reason == "unknown_user"


async def test_erasure_reaches_the_right_shard(sharded: RealSuite) -> None:
    users = [f"erase-{i}" for i in range(6)]
    for i, user in enumerate(users):
        await sharded.stub.Track(view(f"erase-e{i}", user), timeout=5)
    target = users[0]
    reply = await sharded.stub.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=target), timeout=5)
    assert reply.deleted and reply.events_deleted == 1
    for shard in range(SHARDS):
        assert await on_shard(sharded, shard, target) is None
    for user in users[1:]:
        assert await on_shard(sharded, shard_of(user), user) is not None


async def test_personalize_through_the_sharded_router(sharded: RealSuite) -> None:
    personalized_on: set[int] = set()
    for shard in range(SHARDS):
        async for profile in sharded.shard_stub(shard).ScanProfiles(
                profile_pb2.ScanProfilesRequest(limit=100), timeout=10):
            if not profile.recently_viewed or not profile.consent.personalization:
                continue
            reply = await sharded.stub.Personalize(gateway_pb2.PersonalizeRequest(
                user_id=profile.user_id, page_type="home"), timeout=5)
            assert reply.fallback_reason == "" and reply.personalized
            assert all(p.items for p in reply.placements)
            personalized_on.add(shard)
            break
    assert personalized_on == set(range(SHARDS))


async def test_loader_identified_shoppers_are_readable_by_both_ids(sharded: RealSuite) -> None:
    """The demo loader Identified its logged-in shoppers through this gateway."""
    await require_alias_rpcs(sharded)
    found = 0
    for shard in range(SHARDS):
        async for profile in sharded.shard_stub(shard).ScanProfiles(
                profile_pb2.ScanProfilesRequest(limit=500), timeout=10):
            for alias in profile.aliases:
                by_alias = await sharded.stub.GetProfile(profile_pb2.GetProfileRequest(user_id=alias), timeout=5)
                assert by_alias.user_id == profile.user_id
                found += 1
    assert found > 0


async def test_track_batch_lands_each_event_on_its_shopper_shard(sharded: RealSuite) -> None:
    users: dict[int, str] = {}
    i = 0
    while len(users) < SHARDS:
        users.setdefault(shard_of(f"batch-{i}"), f"batch-{i}")
        i += 1
    events = [view(f"tb-{n}", users[n % SHARDS]).event for n in range(9)]
    summary = await sharded.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.rejected) == (9, 0), list(summary.errors)
    for shard, user in users.items():
        profile = await on_shard(sharded, shard, user)
        assert profile is not None and profile.event_count == 3
        for other in set(range(SHARDS)) - {shard}:
            assert await on_shard(sharded, other, user) is None
