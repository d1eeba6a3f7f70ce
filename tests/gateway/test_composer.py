"""The composer as plain async code over in-memory backends: the deadline split, signals
built from the profile, consent, and the pure helpers."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import InvalidArgument
from services.gateway.composer import Composer, consent_withdrawn, user_signals
from services.gateway.config import ASSEMBLY_RESERVE_MS, PROFILE_BUDGET_SHARE
from services.gateway.fallback import TrendingCache, context_segments
from vitrine.v1 import common_pb2, gateway_pb2, recommend_pb2, segment_pb2


class Recorder:
    """Every backend at once: records the timeout each call got."""

    def __init__(self, profile: common_pb2.Profile | None) -> None:
        self.profile = profile
        self.timeouts: dict[str, list[float]] = {"profile": [], "segments": [], "recommend": []}

    async def get_profile(self, user_id: str, seconds: float) -> common_pb2.Profile | None:
        self.timeouts["profile"].append(seconds)
        return self.profile

    async def Evaluate(self, request: segment_pb2.EvaluateRequest, **call: float) -> segment_pb2.EvaluateResponse:
        self.timeouts["segments"].append(call["timeout"])
        return segment_pb2.EvaluateResponse(segment_ids=["s"])

    async def Recommend(self, request: recommend_pb2.RecommendRequest,
                        **call: float) -> recommend_pb2.RecommendResponse:
        self.timeouts["recommend"].append(call["timeout"])
        await asyncio.sleep(0)
        return recommend_pb2.RecommendResponse(items=[recommend_pb2.ScoredProduct(product_id="x")],
                                               strategy_used=recommend_pb2.Strategy.Name(request.strategy))

    async def RecommendBatch(self, request: recommend_pb2.RecommendBatchRequest,
                             **call: float) -> recommend_pb2.RecommendBatchResponse:
        self.timeouts["recommend"].append(call["timeout"])
        await asyncio.sleep(0)
        return recommend_pb2.RecommendBatchResponse(results=[recommend_pb2.RecommendResult(
            response=recommend_pb2.RecommendResponse(items=[recommend_pb2.ScoredProduct(product_id="x")],
                                                     strategy_used=recommend_pb2.Strategy.Name(r.strategy)))
            for r in request.requests])


def composer(backend: Recorder, deadline_ms: int = 50) -> Composer:
    return Composer(backend, backend, backend, TrendingCache(backend, 60.0), deadline_ms=deadline_ms)


async def test_deadline_split_profile_share_then_the_rest_concurrently() -> None:
    backend = Recorder(common_pb2.Profile(user_id="u"))
    reply = await composer(backend).personalize(gateway_pb2.PersonalizeRequest(user_id="u", page_type="home"))
    assert reply.personalized and not reply.fallback_reason
    assert backend.timeouts["profile"] == [pytest.approx(0.05 * PROFILE_BUDGET_SHARE)]
    rest = 0.05 - ASSEMBLY_RESERVE_MS / 1000
    # Both placements in one RecommendBatch call, concurrent with Evaluate.
    assert len(backend.timeouts["recommend"]) == 1 and len(backend.timeouts["segments"]) == 1
    for timeout in (*backend.timeouts["recommend"], *backend.timeouts["segments"]):
        assert 0 < timeout <= rest
    # The request's own budget wins over the server default.
    backend = Recorder(common_pb2.Profile(user_id="u"))
    await composer(backend).personalize(gateway_pb2.PersonalizeRequest(user_id="u", deadline_ms=200))
    assert backend.timeouts["profile"] == [pytest.approx(0.2 * PROFILE_BUDGET_SHARE)]


def test_user_signals_from_the_profile() -> None:
    profile = common_pb2.Profile(
        user_id="u", recently_viewed=[f"p{i}" for i in range(80)], purchased_product_ids=["a", "b"],
        category_affinity={f"c{i}": float(i) for i in range(60)}, avg_order_value=30.0, avg_session_spend=45.0)
    signals = user_signals(profile)
    assert signals.user_id == "u" and len(signals.recent_product_ids) == 50
    assert signals.recent_product_ids[0] == "p0"  # newest first, as in the profile
    assert list(signals.purchased_product_ids) == ["a", "b"]
    assert len(signals.category_affinity) == 50 and "c59" in signals.category_affinity
    assert "c0" not in signals.category_affinity  # the weakest are dropped
    assert signals.budget == 45.0
    assert user_signals(common_pb2.Profile(user_id="new")).budget == 0.0


def test_consent_rules() -> None:
    assert not consent_withdrawn(common_pb2.Profile())  # never set: granted
    assert not consent_withdrawn(common_pb2.Profile(consent=common_pb2.Consent(personalization=True,
                                                                               updated_ms=5)))
    assert consent_withdrawn(common_pb2.Profile(consent=common_pb2.Consent(personalization=False, updated_ms=5)))


def test_context_segments() -> None:
    context = common_pb2.Context(device_type="Tablet", country="br", traffic_source="Paid",
                                 utm=common_pb2.Utm(campaign="bf"))
    assert context_segments(context, new_visitor=True) == [
        "new_visitor", "source:paid", "device:tablet", "geo:BR", "utm_campaign:bf"]
    assert context_segments(common_pb2.Context(), new_visitor=False) == []


async def test_invalid_request_raises_before_any_call() -> None:
    backend = Recorder(None)
    with pytest.raises(InvalidArgument, match="page_type"):
        await composer(backend).personalize(gateway_pb2.PersonalizeRequest(user_id="u", page_type="blog"))
    assert not any(backend.timeouts.values())


async def test_empty_user_id_is_an_unknown_shopper() -> None:
    backend = Recorder(None)
    reply = await composer(backend).personalize(gateway_pb2.PersonalizeRequest(page_type="home"))
    assert reply.fallback_reason == "unknown_user" and not backend.timeouts["profile"]
