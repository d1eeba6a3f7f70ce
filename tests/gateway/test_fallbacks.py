"""Personalize and Track through the real gateway server in front of fault-injecting backends:
every backend down or slow past its deadline, consent, unknown shoppers, recovery."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.gateway.conftest import FakeSuite
from tests.support import assert_status
from vitrine.loadtest.fakes import TRENDING_IDS
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2, recommend_pb2

SLOW = 3.0          # a backend this slow has certainly missed the budget
BUDGET_MS = 300     # deadline of the requests that meet a slow backend
# The answer must come at the deadline, not after the slow backend; the slack is for a
# shared, noisy 2-core machine (a missed deadline would take SLOW seconds).
DEADLINE_SLACK = 0.7

CONTEXT = common_pb2.Context(device_type="mobile", country="fr", traffic_source="email",
                             utm=common_pb2.Utm(campaign="spring"))
CONTEXT_SEGMENTS = ["source:email", "device:mobile", "geo:FR", "utm_campaign:spring"]


def known(suite: FakeSuite, user_id: str = "u1", **fields: object) -> None:
    values: dict[str, object] = {
        "user_id": user_id, "event_count": 5, "recently_viewed": ["p9", "p8"], "purchased_product_ids": ["p1"],
        "category_affinity": {"shoes": 0.8}, "avg_order_value": 40.0, "avg_session_spend": 25.0, **fields}
    suite.profile.profiles[user_id] = common_pb2.Profile(**values)  # type: ignore[arg-type]


def placement_calls(suite: FakeSuite) -> list[recommend_pb2.RecommendRequest]:
    """Recommend calls made for placements (not the gateway's background trending refresh)."""
    return [r for r in suite.recommendation.requests if r.k != 100]


async def fail(suite: FakeSuite, backend: str, mode: str) -> None:
    """`down`: the backend's server is stopped; `slow`: it answers after SLOW seconds."""
    if mode == "down":
        await suite.take_down(backend)
    else:
        getattr(suite, backend).faults.delay = SLOW


async def personalize(suite: FakeSuite, **fields: object) -> tuple[gateway_pb2.PersonalizeResponse, float]:
    values: dict[str, object] = {"user_id": "u1", "context": CONTEXT, "page_type": "home", **fields}
    request = gateway_pb2.PersonalizeRequest(**values)  # type: ignore[arg-type]
    started = time.perf_counter()
    reply = await suite.stub.Personalize(request, timeout=10)
    return reply, time.perf_counter() - started


async def test_composition_for_a_known_shopper(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    reply, _ = await personalize(fake_suite)
    assert reply.personalized and reply.fallback_reason == ""
    assert list(reply.segment_ids) == ["returning_visitor", "evaluated"]
    assert [o.offer_id for o in reply.offers] == ["welcome"]
    assert [(p.slot_id, p.strategy_used, p.fallback) for p in reply.placements] == [
        ("for_you", "FOR_YOU", False), ("trending", "TRENDING", False)]
    assert len(reply.placements[0].items) == 8 and reply.model_version == "fake-1"
    # UserSignals come from the profile; the profile itself went to Evaluate.
    call = next(r for r in placement_calls(fake_suite) if r.strategy == recommend_pb2.FOR_YOU)
    assert list(call.user.recent_product_ids) == ["p9", "p8"]
    assert list(call.user.purchased_product_ids) == ["p1"]
    assert call.user.category_affinity["shoes"] == pytest.approx(0.8)
    assert call.user.budget == pytest.approx(40.0)
    assert fake_suite.segmentation.seen[-1].profile.user_id == "u1"


@pytest.mark.parametrize(("page", "extra", "slots"), [
    ("home", {}, [("for_you", recommend_pb2.FOR_YOU), ("trending", recommend_pb2.TRENDING)]),
    ("product", {"product_id": "p5"}, [("similar", recommend_pb2.SIMILAR),
                                       ("bought_together", recommend_pb2.BOUGHT_TOGETHER),
                                       ("up_sell", recommend_pb2.UP_SELL)]),
    ("cart", {"cart_product_ids": ["p1", "p2"]}, [("cart_complements", recommend_pb2.CART_COMPLEMENTS)]),
    ("checkout", {}, [("cart_complements", recommend_pb2.CART_COMPLEMENTS)]),
    ("category", {"category": "shoes"}, [("for_you", recommend_pb2.FOR_YOU)]),
    ("search", {"category": "bags"}, [("for_you", recommend_pb2.FOR_YOU)]),
])
async def test_default_placements_per_page_type(fake_suite: FakeSuite, page: str, extra: dict,
                                                slots: list) -> None:
    known(fake_suite)
    fake_suite.recommendation.requests.clear()
    reply, _ = await personalize(fake_suite, page_type=page, **extra)
    assert reply.fallback_reason == ""
    assert [p.slot_id for p in reply.placements] == [s for s, _ in slots]
    calls = sorted(placement_calls(fake_suite), key=lambda r: r.strategy)
    assert sorted(r.strategy for r in calls) == sorted(s for _, s in slots)
    for call in calls:
        assert call.product_id == extra.get("product_id", "")
        assert list(call.cart_product_ids) == extra.get("cart_product_ids", [])
        if page in ("category", "search"):
            assert list(call.constraints.include_categories) == [extra["category"]]


async def test_explicit_placements_are_used_as_given(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    placements = [gateway_pb2.Placement(slot_id="a", strategy=recommend_pb2.RECENTLY_VIEWED, k=3),
                  gateway_pb2.Placement(slot_id="b", strategy=recommend_pb2.TRENDING, k=2)]
    reply, _ = await personalize(fake_suite, placements=placements)
    assert [(p.slot_id, len(p.items)) for p in reply.placements] == [("a", 3), ("b", 2)]


@pytest.mark.parametrize("fields", [
    {"page_type": "landing"},
    {"page_type": "product"},  # no product_id
    {"placements": [gateway_pb2.Placement(slot_id="x", strategy=recommend_pb2.FOR_YOU, k=1000)]},
    {"placements": [gateway_pb2.Placement(slot_id="x")]},
    {"placements": [gateway_pb2.Placement(slot_id="x", strategy=recommend_pb2.TRENDING)] * 2},
    {"deadline_ms": -1},
    {"user_id": "u" * 1000},
])
async def test_malformed_request_is_invalid_argument(fake_suite: FakeSuite, fields: dict) -> None:
    await assert_status(personalize(fake_suite, **fields), grpc.StatusCode.INVALID_ARGUMENT)


async def test_unknown_shopper_gets_the_default_experience(fake_suite: FakeSuite) -> None:
    reply, _ = await personalize(fake_suite, user_id="stranger")
    assert not reply.personalized and reply.fallback_reason == "unknown_user"
    assert list(reply.segment_ids) == ["new_visitor", "evaluated"]  # Evaluate as a new visitor
    assert [p.strategy_used for p in reply.placements] == ["TRENDING", "TRENDING"]
    assert all(not r.user.user_id for r in placement_calls(fake_suite))


async def test_withdrawn_consent_is_not_personalized(fake_suite: FakeSuite) -> None:
    known(fake_suite, consent=common_pb2.Consent(personalization=False, updated_ms=1))
    evaluated = len(fake_suite.segmentation.seen)
    reply, _ = await personalize(fake_suite)
    assert not reply.personalized and reply.fallback_reason == "no_consent"
    assert list(reply.segment_ids) == CONTEXT_SEGMENTS and not reply.offers
    assert len(fake_suite.segmentation.seen) == evaluated  # the profile was not sent anywhere
    assert all(not r.user.user_id and not r.user.recent_product_ids for r in placement_calls(fake_suite))
    # Consent never set counts as granted; explicitly granted too.
    known(fake_suite, consent=common_pb2.Consent(personalization=True, updated_ms=1))
    assert (await personalize(fake_suite))[0].personalized


@pytest.mark.parametrize("mode", ["down", "slow", "error"])
async def test_profile_unavailable(fake_suite: FakeSuite, mode: str) -> None:
    known(fake_suite)
    if mode == "error":
        fake_suite.profile.faults.code = grpc.StatusCode.INTERNAL
    else:
        await fail(fake_suite, "profile", mode)
    reply, elapsed = await personalize(fake_suite, deadline_ms=BUDGET_MS)
    assert elapsed < BUDGET_MS / 1000 + DEADLINE_SLACK
    assert not reply.personalized and reply.fallback_reason == "profile_unavailable"
    assert list(reply.segment_ids) == CONTEXT_SEGMENTS  # context-only, not "new_visitor"
    assert [p.strategy_used for p in reply.placements] == ["TRENDING", "TRENDING"]


@pytest.mark.parametrize("mode", ["down", "slow"])
async def test_segmentation_unavailable(fake_suite: FakeSuite, mode: str) -> None:
    known(fake_suite)
    await fail(fake_suite, "segmentation", mode)
    reply, elapsed = await personalize(fake_suite, deadline_ms=BUDGET_MS)
    assert elapsed < BUDGET_MS / 1000 + DEADLINE_SLACK
    assert reply.fallback_reason == "segmentation_unavailable"
    assert reply.personalized  # the placements still used the profile
    assert list(reply.segment_ids) == CONTEXT_SEGMENTS and not reply.offers
    assert [p.strategy_used for p in reply.placements] == ["FOR_YOU", "TRENDING"]


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "per-placement"])
@pytest.mark.parametrize("mode", ["down", "slow"])
async def test_recommendation_unavailable_uses_warm_trending(fake_suite: FakeSuite, mode: str,
                                                             batch: bool) -> None:
    known(fake_suite)
    fake_suite.recommendation.batch_implemented = batch
    assert fake_suite.service.trending.global_items  # warmed at start-up
    await fail(fake_suite, "recommendation", mode)
    reply, elapsed = await personalize(fake_suite, deadline_ms=BUDGET_MS)
    assert elapsed < BUDGET_MS / 1000 + DEADLINE_SLACK
    assert reply.fallback_reason == "recommendation_unavailable"
    for placement in reply.placements:
        assert placement.fallback and placement.strategy_used == "TRENDING"
        assert [i.product_id for i in placement.items] == TRENDING_IDS[:8]
    assert list(reply.segment_ids) == ["returning_visitor", "evaluated"]


async def test_placements_go_in_one_batch_call(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    fake_suite.recommendation.requests.clear()
    reply, _ = await personalize(fake_suite, page_type="product", product_id="p5")
    assert reply.fallback_reason == "" and fake_suite.recommendation.batches == 1
    assert [(p.slot_id, p.strategy_used) for p in reply.placements] == [
        ("similar", "SIMILAR"), ("bought_together", "BOUGHT_TOGETHER"), ("up_sell", "UP_SELL")]
    assert len(placement_calls(fake_suite)) == 3  # the three requests, inside the one call


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "per-placement"])
async def test_one_failing_placement_falls_back_alone(fake_suite: FakeSuite, batch: bool) -> None:
    known(fake_suite)
    fake_suite.recommendation.batch_implemented = batch
    fake_suite.recommendation.failing_strategies = {recommend_pb2.FOR_YOU}
    reply, _ = await personalize(fake_suite)
    assert reply.personalized and reply.fallback_reason == "recommendation_unavailable"
    assert [(p.slot_id, p.strategy_used, p.fallback) for p in reply.placements] == [
        ("for_you", "TRENDING", True), ("trending", "TRENDING", False)]
    assert [i.product_id for i in reply.placements[0].items] == TRENDING_IDS[:8]  # the warm list
    assert reply.placements[1].items[0].product_id == "trending-0"  # from the backend
    assert list(reply.segment_ids) == ["returning_visitor", "evaluated"]


async def test_without_recommend_batch_one_recommend_per_placement(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    fake_suite.recommendation.batch_implemented = False
    fake_suite.recommendation.requests.clear()
    for _ in range(2):  # the first call learns UNIMPLEMENTED and still answers in full
        reply, _ = await personalize(fake_suite)
        assert reply.fallback_reason == "" and reply.personalized
        assert [p.strategy_used for p in reply.placements] == ["FOR_YOU", "TRENDING"]
    assert fake_suite.recommendation.batches == 0 and len(placement_calls(fake_suite)) == 4


async def test_trending_fallback_honours_category_and_exclusions(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    fake_suite.recommendation.faults.code = grpc.StatusCode.UNAVAILABLE
    placements = [gateway_pb2.Placement(
        slot_id="x", strategy=recommend_pb2.FOR_YOU, k=3,
        constraints=recommend_pb2.Constraints(exclude_product_ids=["t1"], include_categories=["shoes"]))]
    reply, _ = await personalize(fake_suite, placements=placements, product_id="t3")
    assert [i.product_id for i in reply.placements[0].items] == ["t5", "t7", "t9"]


async def test_everything_down_still_answers(fake_suite: FakeSuite) -> None:
    for name in ("profile", "segmentation", "recommendation"):
        await fake_suite.take_down(name)
    reply, elapsed = await personalize(fake_suite, deadline_ms=50)
    assert elapsed < 0.05 + DEADLINE_SLACK
    assert reply.fallback_reason == "profile_unavailable,recommendation_unavailable"
    assert not reply.personalized and len(reply.placements) == 2


async def _until_clean(suite: FakeSuite, seconds: float = 10.0) -> gateway_pb2.PersonalizeResponse:
    end = time.monotonic() + seconds
    while True:
        reply, _ = await personalize(suite)
        if not reply.fallback_reason or time.monotonic() > end:
            return reply
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("name", ["profile", "segmentation", "recommendation"])
async def test_recovery_when_the_backend_comes_back(fake_suite: FakeSuite, name: str) -> None:
    known(fake_suite)
    port = await fake_suite.take_down(name)
    reply, _ = await personalize(fake_suite)
    assert reply.fallback_reason == f"{name}_unavailable"
    await fake_suite.bring_back(name, port)
    reply = await _until_clean(fake_suite)
    assert reply.fallback_reason == "" and reply.personalized


async def test_deadline_from_the_request(fake_suite: FakeSuite) -> None:
    known(fake_suite)
    fake_suite.recommendation.faults.delay = 0.15
    reply, _ = await personalize(fake_suite)
    assert reply.fallback_reason == ""  # 150 ms fits in the server default (1 s here)
    reply, elapsed = await personalize(fake_suite, deadline_ms=20)
    # On a busy machine the other fakes can miss a 20 ms budget too; the slow one must be named.
    assert "recommendation_unavailable" in reply.fallback_reason.split(",") and elapsed < 0.02 + DEADLINE_SLACK


# --- Track -------------------------------------------------------------------------------------

def event(event_id: str = "e1", user_id: str = "u1") -> common_pb2.Event:
    return common_pb2.Event(event_id=event_id, user_id=user_id, type=common_pb2.PRODUCT_VIEW, product_id="p3",
                            timestamp_ms=int(time.time() * 1000))


async def test_track_reaches_the_profile_only(fake_suite: FakeSuite) -> None:
    """The Observe fan-out is retired: downstream consumers follow the profile's log."""
    await asyncio.gather(*(fake_suite.stub.Track(profile_pb2.TrackRequest(event=event(f"b{i}")), timeout=5)
                           for i in range(20)))
    assert fake_suite.profile.profiles["u1"].event_count == 20
    assert fake_suite.profile.profiles["u1"].recently_viewed[0] == "p3"
    assert fake_suite.recommendation.observe_calls == 0 and not fake_suite.recommendation.observed


async def test_track_errors_propagate(fake_suite: FakeSuite) -> None:
    err = await assert_status(fake_suite.stub.Track(profile_pb2.TrackRequest(event=event(event_id="")), timeout=5),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert "event_id is required" in err.details()
    fake_suite.profile.faults.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    fake_suite.profile.faults.message = "disk full"
    err = await assert_status(fake_suite.stub.Track(profile_pb2.TrackRequest(event=event()), timeout=5),
                              grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert err.details() == "disk full"
    fake_suite.profile.faults.clear()
    await fake_suite.take_down("profile")
    await assert_status(fake_suite.stub.Track(profile_pb2.TrackRequest(event=event()), timeout=5),
                        grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("mode", ["down", "slow"])
async def test_track_does_not_depend_on_the_recommendation_service(fake_suite: FakeSuite, mode: str) -> None:
    await fail(fake_suite, "recommendation", mode)
    for i in range(5):
        started = time.perf_counter()
        reply = await fake_suite.stub.Track(profile_pb2.TrackRequest(event=event(f"e{i}")), timeout=5)
        assert reply.applied and time.perf_counter() - started < 0.5
    assert fake_suite.profile.profiles["u1"].event_count == 5
