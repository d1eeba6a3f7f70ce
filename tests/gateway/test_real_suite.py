"""Personalize composed from the REAL profile, segmentation and recommendation services
(one profile shard), with a small demo store; and recovery after a real backend restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from tests.gateway.real import RealSuite, real_suite
from tests.support import assert_status
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")

MOBILE_FR = common_pb2.Context(device_type="mobile", country="FR", traffic_source="email")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealSuite]:
    async with real_suite(Path(tmp_path_factory.mktemp("real")), shards=1) as suite:
        yield suite


async def shopper_with_views(real: RealSuite) -> common_pb2.Profile:
    stub = real.shard_stub(0)
    async for profile in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=200), timeout=10):
        if len(profile.recently_viewed) >= 2 and profile.consent.personalization:
            return profile
    raise AssertionError("the demo store has no shopper with views")


async def test_personalize_home_composes_the_three_services(real: RealSuite) -> None:
    profile = await shopper_with_views(real)
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id=profile.user_id, page_type="home", context=MOBILE_FR), timeout=5)
    assert reply.fallback_reason == "" and reply.personalized
    assert [p.slot_id for p in reply.placements] == ["for_you", "trending"]
    assert all(p.items for p in reply.placements)
    assert {"device:mobile", "geo:FR", "source:email"} <= set(reply.segment_ids)
    assert "new_visitor" not in reply.segment_ids
    assert reply.model_version


async def test_personalize_product_page_defaults(real: RealSuite) -> None:
    profile = await shopper_with_views(real)
    anchor = profile.recently_viewed[0]
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id=profile.user_id, page_type="product", product_id=anchor, context=MOBILE_FR), timeout=5)
    assert reply.fallback_reason == ""
    assert [p.slot_id for p in reply.placements] == ["similar", "bought_together", "up_sell"]
    assert all(anchor not in {i.product_id for i in p.items} for p in reply.placements)


async def test_personalize_category_page_stays_in_the_category(real: RealSuite) -> None:
    profile = await shopper_with_views(real)
    category = max(profile.category_affinity.items(), key=lambda kv: kv[1])[0]
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id=profile.user_id, page_type="category", category=category), timeout=5)
    assert reply.fallback_reason == ""
    items = reply.placements[0].items
    assert items and {i.category for i in items} == {category}


async def test_unknown_shopper_and_withdrawn_consent(real: RealSuite) -> None:
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id="never-seen-before", page_type="home", context=MOBILE_FR), timeout=5)
    assert not reply.personalized and reply.fallback_reason == "unknown_user"
    assert "new_visitor" in reply.segment_ids and all(p.items for p in reply.placements)

    profile = await shopper_with_views(real)
    await real.stub.SetConsent(profile_pb2.SetConsentRequest(
        user_id=profile.user_id, consent=common_pb2.Consent(personalization=False)), timeout=5)
    reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(
        user_id=profile.user_id, page_type="home", context=MOBILE_FR), timeout=5)
    assert not reply.personalized and reply.fallback_reason == "no_consent"
    assert set(reply.segment_ids) == {"device:mobile", "geo:FR", "source:email"}
    assert all(p.items for p in reply.placements)


async def test_track_and_profile_operations_through_the_gateway(real: RealSuite) -> None:
    now = int(time.time() * 1000)
    event = common_pb2.Event(event_id="gw-e1", user_id="gw-user", type=common_pb2.PRODUCT_VIEW,
                             product_id="p000001", timestamp_ms=now)
    assert (await real.stub.Track(profile_pb2.TrackRequest(event=event), timeout=5)).applied
    assert not (await real.stub.Track(profile_pb2.TrackRequest(event=event), timeout=5)).applied
    profile = await real.stub.GetProfile(profile_pb2.GetProfileRequest(user_id="gw-user"), timeout=5)
    assert list(profile.recently_viewed) == ["p000001"]
    assert "gw-user" in (await real.stub.ExportProfile(
        profile_pb2.ExportProfileRequest(user_id="gw-user"), timeout=5)).json
    bad = common_pb2.Event(event_id="gw-e2", user_id="gw-user", type=common_pb2.PRODUCT_VIEW, timestamp_ms=now)
    err = await assert_status(real.stub.Track(profile_pb2.TrackRequest(event=bad), timeout=5),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert "product_id" in err.details()
    assert (await real.stub.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id="gw-user"), timeout=5)).deleted
    await assert_status(real.stub.GetProfile(profile_pb2.GetProfileRequest(user_id="gw-user"), timeout=5),
                        grpc.StatusCode.NOT_FOUND)


async def test_recovery_when_the_real_recommendation_service_restarts(real: RealSuite) -> None:
    profile = await shopper_with_views(real)
    request = gateway_pb2.PersonalizeRequest(user_id=profile.user_id, page_type="home", deadline_ms=100)
    port = await real.stop_recommendation()
    reply = await real.stub.Personalize(request, timeout=5)
    assert reply.fallback_reason == "recommendation_unavailable" and reply.personalized
    assert all(p.fallback and p.items for p in reply.placements)  # warm trending
    await real.start_recommendation(port)
    for _ in range(100):
        reply = await real.stub.Personalize(request, timeout=5)
        if not reply.fallback_reason:
            break
        await asyncio.sleep(0.1)
    assert reply.fallback_reason == "" and reply.personalized
