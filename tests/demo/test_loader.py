"""The demo loader against the real services, in-process on port 0 with temporary data directories."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.gateway.app import build_service as build_gateway
from services.gateway.config import GatewayConfig
from services.profile.app import build_service as build_profile
from services.profile.config import ProfileConfig
from services.recommendation.app import build_service as build_recommendation
from services.recommendation.config import RecommendationConfig
from services.segmentation.app import build_service as build_segmentation
from services.segmentation.config import SegmentationConfig
from tests.support import serving
from vitrine.demo.config import REFERENCE_NOW_MS, DemoConfig
from vitrine.demo.loader import LoadReport, load_demo, shard_function
from vitrine.demo.sessions import PURCHASE, iter_histories
from vitrine.demo.store import demo_offers, demo_segments
from vitrine.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)

ROOT = Path(__file__).resolve().parents[2]
# Recent enough that the window covers "now" for the services' own clocks.
SMALL = DemoConfig(n_products=300, n_shoppers=100, seed=11)


@dataclasses.dataclass
class Suite:
    profiles: list[str]
    segmentation: str
    recommendation: str
    gateway: str


@contextlib.asynccontextmanager
async def suite(tmp_path: Path, shards: int = 1) -> AsyncIterator[Suite]:
    async with contextlib.AsyncExitStack() as stack:
        profiles = []
        for i in range(shards):
            cfg = ProfileConfig(port=0, data_dir=str(tmp_path / f"shard{i}"), sync=False, map_size_mb=256)
            running = await stack.enter_async_context(serving(build_profile(cfg), cfg))
            profiles.append(running.address)
        addresses = ",".join(profiles)
        seg_cfg = SegmentationConfig(port=0, data_dir=str(tmp_path), profile_addresses=addresses)
        seg = await stack.enter_async_context(serving(build_segmentation(seg_cfg), seg_cfg))
        rec_cfg = RecommendationConfig(port=0, data_dir=str(tmp_path), profile_addresses=addresses,
                                       snapshot_seconds=0)
        rec = await stack.enter_async_context(serving(build_recommendation(rec_cfg), rec_cfg))
        gw_cfg = GatewayConfig(port=0, profile_addresses=addresses, segmentation_address=seg.address,
                               recommendation_address=rec.address)
        gw = await stack.enter_async_context(serving(build_gateway(gw_cfg), gw_cfg))
        yield Suite(profiles, seg.address, rec.address, gw.address)


def _expected(config: DemoConfig) -> tuple[set[str], list[tuple[str, str]], set[str], str]:
    """Users, Identify pairs of who logged in, customers registered from the start and one purchaser."""
    users: set[str] = set()
    pairs = []
    registered = set()
    purchaser = ""
    for history in iter_histories(config):
        for visit in history.visits:
            users.add(visit.user_id)
            if not purchaser and any(e[0] == PURCHASE for e in visit.events):
                purchaser = visit.user_id
        if history.identify:
            pairs.append(history.identify)
        elif history.shopper.customer_id and history.visits:
            registered.add(history.shopper.customer_id)
    return users, pairs, registered, purchaser


async def _check_store(s: Suite, report: LoadReport, config: DemoConfig) -> None:
    users, pairs, registered, purchaser = _expected(config)
    assert not report.errors, report.errors
    assert report.products_upserted == config.n_products
    assert report.events > 1_000 and report.events_accepted == report.events
    assert report.identified == len(pairs) + len(registered) and pairs and registered
    assert report.segments == len(demo_segments()) and report.offers == len(demo_offers(0))
    assert report.model_version and report.train_sessions > 50 and report.trained_items > 50
    assert report.observed == 0  # no Observe fan-out: the recommendation service follows the profile log

    async with grpc.aio.insecure_channel(s.gateway) as gw_channel:
        gateway = gateway_pb2_grpc.PersonalizationServiceStub(gw_channel)
        # a purchaser's profile: purchases, spend, context
        profile = await gateway.GetProfile(profile_pb2.GetProfileRequest(user_id=purchaser), timeout=10)
        assert profile.purchase_count >= 1 and profile.total_spend > 0 and profile.purchased_product_ids
        assert profile.recently_viewed and profile.category_affinity and profile.visit_count >= 1
        assert profile.last_context.device_type in ("mobile", "desktop", "tablet")
        # shoppers who logged in: either id reads the merged, registered profile
        anonymous, customer = pairs[0]
        merged = await gateway.GetProfile(profile_pb2.GetProfileRequest(user_id=customer), timeout=10)
        via_alias = await gateway.GetProfile(profile_pb2.GetProfileRequest(user_id=anonymous), timeout=10)
        assert merged.registered and anonymous in merged.aliases
        assert via_alias.user_id == customer
        # the home page of a known shopper
        reply = await gateway.Personalize(gateway_pb2.PersonalizeRequest(
            user_id=purchaser, page_type="home", context=profile.last_context, deadline_ms=3_000), timeout=10)
        assert reply.placements and any(p.items for p in reply.placements)

    async with grpc.aio.insecure_channel(s.segmentation) as channel:
        segments = segment_pb2_grpc.SegmentServiceStub(channel)
        listed = await segments.ListSegments(segment_pb2.ListSegmentsRequest(), timeout=10)
        assert {x.segment_id for x in demo_segments()} <= {x.segment_id for x in listed.segments}
        offers = await segments.ListOffers(segment_pb2.ListOffersRequest(), timeout=10)
        assert len(offers.offers) == len(demo_offers(0))
        evaluated = await segments.Evaluate(segment_pb2.EvaluateRequest(
            profile=profile, context=common_pb2.Context(device_type="mobile", country="BR")), timeout=10)
        assert "device:mobile" in evaluated.segment_ids and "geo:BR" in evaluated.segment_ids
        buyers = await segments.EstimateSize(segment_pb2.EstimateSizeRequest(rule="purchase_count >= 1"),
                                             timeout=30)
        assert 0 < buyers.matching < buyers.total
        assert buyers.total == len(users) - len(pairs)  # anonymous profiles were merged away
        accounts = await segments.EstimateSize(segment_pb2.EstimateSizeRequest(segment_id="registered"),
                                               timeout=30)
        assert accounts.matching == len(pairs) + len(registered)
        sizes = {}
        for segment in demo_segments():  # every store rule runs over the stored profiles
            size = await segments.EstimateSize(segment_pb2.EstimateSizeRequest(segment_id=segment.segment_id),
                                               timeout=30)
            sizes[segment.segment_id] = size.matching
        assert sizes["window_shoppers"] > 0 and sizes["big_spenders"] > 0, sizes

    async with grpc.aio.insecure_channel(s.recommendation) as channel:
        recommend = recommend_pb2_grpc.RecommendServiceStub(channel)
        anchor = profile.recently_viewed[0]
        similar = await recommend.Recommend(recommend_pb2.RecommendRequest(
            strategy=recommend_pb2.SIMILAR, k=5, product_id=anchor), timeout=10)
        assert similar.items and similar.model_version == report.model_version
        assert anchor not in {i.product_id for i in similar.items}
        for_you = await recommend.Recommend(recommend_pb2.RecommendRequest(
            strategy=recommend_pb2.FOR_YOU, k=8, user=recommend_pb2.UserSignals(
                user_id=profile.user_id, recent_product_ids=profile.recently_viewed,
                category_affinity=profile.category_affinity)), timeout=10)
        assert len(for_you.items) == 8
        assert all(i.product_id.startswith("p") and i.price > 0 for i in for_you.items)


async def test_load_small_demo_into_real_services(tmp_path: Path) -> None:
    config = SMALL.resolved()
    lines: list[str] = []
    async with suite(tmp_path) as s:
        report = await load_demo(config, profile_addresses=s.profiles, segmentation_address=s.segmentation,
                                 recommendation_address=s.recommendation, progress=lines.append)
        await _check_store(s, report, config)
        # loading again is idempotent: every event is a duplicate
        again = await load_demo(config, profile_addresses=s.profiles, segmentation_address=None,
                                recommendation_address=None, progress=None)
        assert again.events_duplicate == report.events and again.events_accepted == 0
    assert any("events" in line for line in lines) and lines[-1].startswith("[demo] done")


@pytest.mark.slow
async def test_load_small_demo_into_two_profile_shards(tmp_path: Path) -> None:
    config = SMALL.resolved()
    async with suite(tmp_path, shards=2) as s:
        report = await load_demo(config, profile_addresses=s.profiles, gateway_address=s.gateway,
                                 segmentation_address=s.segmentation, recommendation_address=s.recommendation,
                                 progress=None)
        await _check_store(s, report, config)
        # events went to the shard the gateway's router picks
        route = shard_function(2)
        assert route is not None
        users, _, _, _ = _expected(config)
        user = sorted(users)[0]
        async with grpc.aio.insecure_channel(s.profiles[route(user)]) as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            assert (await stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=10)).event_count


async def test_load_fails_clearly_when_a_service_is_down() -> None:
    with pytest.raises(TimeoutError):
        await load_demo(DemoConfig(n_products=50, n_shoppers=5, now_ms=REFERENCE_NOW_MS),
                        profile_addresses=["127.0.0.1:1"], segmentation_address=None,
                        recommendation_address=None, progress=None, ready_timeout=1.0)


async def test_load_through_the_gateway_only(tmp_path: Path) -> None:
    config = DemoConfig(n_products=200, n_shoppers=40, seed=3).resolved()
    users, pairs, registered, purchaser = _expected(config)
    async with suite(tmp_path) as s:
        report = await load_demo(config, gateway_address=s.gateway, segmentation_address=s.segmentation,
                                 recommendation_address=s.recommendation, progress=None, train=False)
        assert not report.errors, report.errors
        assert report.events_accepted == report.events > 0
        assert report.identified == len(pairs) + len(registered)
        assert report.observed == 0  # the gateway observes by itself
        async with grpc.aio.insecure_channel(s.gateway) as channel:
            gateway = gateway_pb2_grpc.PersonalizationServiceStub(channel)
            user = purchaser or sorted(users)[0]
            profile = await gateway.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=10)
            assert profile.event_count > 0 and profile.consent.personalization
            reply = await gateway.Personalize(gateway_pb2.PersonalizeRequest(
                user_id=user, page_type="home", context=profile.last_context, deadline_ms=3_000), timeout=10)
            assert reply.personalized, reply.fallback_reason
            assert f"device:{profile.last_context.device_type}" in reply.segment_ids


async def test_cli_loads_into_running_services(tmp_path: Path) -> None:
    async with suite(tmp_path) as s:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vitrine", "demo", "--products", "150", "--shoppers", "25", "--seed", "9",
            "--profile", ",".join(s.profiles), "--segmentation", s.segmentation, "--recommendation",
            s.recommendation, "--gateway", s.gateway, "--no-train",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()
        assert "events" in out.decode() and "0 errors" in out.decode()
        assert "[demo] events:" in err.decode()  # progress with rates on stderr
        async with grpc.aio.insecure_channel(s.recommendation) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            info = await stub.GetModelInfo(recommend_pb2.GetModelInfoRequest(), timeout=10)
            assert info.products == 150
