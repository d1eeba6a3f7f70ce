"""The second-release gateway paths through the REAL services (one profile shard, small demo store):
TrackBatch, an experiment defined in the real segmentation service served by its variant with the
EXPOSURE event in the profile log, and a ranked placement answered by the real Rank."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from tests.gateway.real import RealSuite, real_suite
from vitrine.v1 import (
    common_pb2,
    gateway_pb2,
    profile_pb2,
    recommend_pb2,
    recommend_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
FEED_WAIT_S = 20.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealSuite]:
    async with real_suite(Path(tmp_path_factory.mktemp("second")), shards=1) as suite:
        yield suite


async def shoppers(real: RealSuite, n: int) -> list[common_pb2.Profile]:
    found = []
    async for profile in real.shard_stub(0).ScanProfiles(profile_pb2.ScanProfilesRequest(limit=500), timeout=10):
        if len(profile.recently_viewed) >= 2 and profile.consent.personalization:
            found.append(profile)
    assert len(found) >= n, "the demo store has too few shoppers with views"
    return found[:n]


async def test_track_batch_applies_durably_through_the_gateway(real: RealSuite) -> None:
    now = int(time.time() * 1000)
    events = [common_pb2.Event(event_id=f"tb-{i}", user_id="batch-shopper", type=common_pb2.PAGE_VIEW,
                               timestamp_ms=now + i) for i in range(5)]
    events.append(common_pb2.Event(event_id="tb-bad", user_id="batch-shopper", type=common_pb2.PRODUCT_VIEW,
                                   timestamp_ms=now))  # no product_id: rejected, the others apply
    summary = await real.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (5, 0, 1)
    assert len(summary.errors) == 1 and summary.errors[0].startswith("event 5 (tb-bad)")
    profile = await real.stub.GetProfile(profile_pb2.GetProfileRequest(user_id="batch-shopper"), timeout=5)
    assert profile.event_count == 5
    again = await real.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events[:5]), timeout=10)
    assert (again.accepted, again.duplicates) == (0, 5)


async def exposures_in_log(real: RealSuite, user_ids: set[str]) -> dict[str, common_pb2.Event]:
    """EXPOSURE events of these shoppers, read from the profile's feed (waits for them, bounded)."""
    found: dict[str, common_pb2.Event] = {}
    call = real.shard_stub(0).FollowEvents(profile_pb2.FollowEventsRequest(from_seq=0), timeout=FEED_WAIT_S)
    try:
        async for item in call:
            event = item.event
            if item.WhichOneof("item") == "event" and event.type == common_pb2.EXPOSURE and event.user_id in user_ids:
                found[event.user_id] = event
                if len(found) == len(user_ids):
                    break
    finally:
        call.cancel()
    return found


async def test_an_experiment_is_served_by_its_variant_and_exposed_in_the_log(real: RealSuite) -> None:
    channel = grpc.aio.insecure_channel(real.segmentation.address)
    segments = segment_pb2_grpc.SegmentServiceStub(channel)
    experiment = segment_pb2.Experiment(experiment_id="home-for-you", name="trending vs for you", slot_id="for_you",
                                        variants=[
                                            segment_pb2.Variant(variant_id="control", weight=1,
                                                                strategy=recommend_pb2.FOR_YOU),
                                            segment_pb2.Variant(variant_id="trending", weight=1,
                                                                strategy=recommend_pb2.TRENDING, k=4)])
    await segments.PutExperiment(segment_pb2.PutExperimentRequest(experiment=experiment), timeout=5)
    assert await real.service.experiments.refresh()  # type: ignore[union-attr]
    served: dict[str, str] = {}
    for profile in await shoppers(real, 12):
        reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
            user_id=profile.user_id, session_id="s", page_type="home"), timeout=5)
        [assignment] = [a for a in reply.assignments if a.experiment_id == "home-for-you"]
        for_you = next(p for p in reply.placements if p.slot_id == "for_you")
        if assignment.variant_id == "trending":
            assert len(for_you.items) == 4 and for_you.strategy_used == "TRENDING"
        else:
            assert len(for_you.items) == 8  # the placement's own k (the variant names none)
        served[profile.user_id] = assignment.variant_id
    assert set(served.values()) == {"control", "trending"}, "12 shoppers all in one variant of a 50/50 split"
    # The same shopper gets the same variant again.
    first = next(iter(served))
    again = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(user_id=first, page_type="home"), timeout=5)
    assert [a.variant_id for a in again.assignments] == [served[first]]
    logged = await asyncio.wait_for(exposures_in_log(real, set(served)), FEED_WAIT_S)
    assert {user: e.exposures[0].variant_id for user, e in logged.items()} == served
    assert all(e.exposures[0].slot_id == "for_you" for e in logged.values())
    await segments.DeleteExperiment(segment_pb2.DeleteExperimentRequest(experiment_id="home-for-you"), timeout=5)
    await real.service.experiments.refresh()  # type: ignore[union-attr]
    await channel.close()


async def test_a_ranked_placement_is_answered_by_the_real_rank(real: RealSuite) -> None:
    [profile] = await shoppers(real, 1)
    async with grpc.aio.insecure_channel(real.recommendation.address) as channel:
        trending = await recommend_pb2_grpc.RecommendServiceStub(channel).Recommend(
            recommend_pb2.RecommendRequest(strategy=recommend_pb2.TRENDING, k=30), timeout=5)
    candidates = [item.product_id for item in trending.items][::-1]
    assert len(candidates) >= 10
    excluded = candidates[0]
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id=profile.user_id, page_type="search", placements=[gateway_pb2.Placement(
            slot_id="results", candidate_product_ids=candidates, k=10,
            constraints=recommend_pb2.Constraints(exclude_product_ids=[excluded]))]), timeout=5)
    [results] = reply.placements
    assert not results.fallback and reply.fallback_reason == "" and reply.personalized
    ids = [item.product_id for item in results.items]
    assert 0 < len(ids) <= 10 and set(ids) <= set(candidates) and excluded not in ids


async def test_rank_down_keeps_the_callers_order(real: RealSuite) -> None:
    [profile] = await shoppers(real, 1)
    port = await real.stop_recommendation()
    try:
        reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
            user_id=profile.user_id, page_type="search", deadline_ms=300, placements=[gateway_pb2.Placement(
                slot_id="results", candidate_product_ids=["a", "b", "c"], k=2)]), timeout=5)
    finally:
        await real.start_recommendation(port)
    [results] = reply.placements
    assert results.fallback and results.strategy_used == "CALLER_ORDER"
    assert [item.product_id for item in results.items] == ["a", "b"]
