"""Never silent: the composer's catch-all and the trending per-category fetch count every failure
in a metric and log it once."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from services.gateway.composer import Composer
from services.gateway.fallback import TrendingCache
from tests.gateway.test_composer import Recorder
from vitrine.v1 import common_pb2, gateway_pb2, recommend_pb2, segment_pb2


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class BrokenSegments(Recorder):
    async def Evaluate(self, request: segment_pb2.EvaluateRequest, **call: float) -> segment_pb2.EvaluateResponse:
        raise KeyError("a bug on the client side")


async def test_an_unexpected_error_falls_back_is_counted_each_time_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    backend = BrokenSegments(common_pb2.Profile(user_id="u"))
    composer = Composer(backend, backend, backend, TrendingCache(backend, 60.0), deadline_ms=200)
    labels = {"backend": "segmentation", "error": "KeyError"}
    before = _sample("vitrine_gateway_unexpected_errors_total", labels)
    with caplog.at_level(logging.WARNING, logger="services.gateway.composer"):
        for _ in range(3):
            reply = await composer.personalize(gateway_pb2.PersonalizeRequest(user_id="u", page_type="home"))
            assert "segmentation_unavailable" in reply.fallback_reason and reply.placements
    assert _sample("vitrine_gateway_unexpected_errors_total", labels) == before + 3
    logged = [r for r in caplog.records if "unexpected KeyError calling segmentation" in r.getMessage()]
    assert len(logged) <= 1  # once per process: an earlier test may have logged it already
    assert logged or before > 0


class FailingCategory(Recorder):
    async def Recommend(self, request: recommend_pb2.RecommendRequest,
                        **call: float) -> recommend_pb2.RecommendResponse:
        if request.constraints.include_categories:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "down")
        return await super().Recommend(request, **call)


async def test_a_failed_category_fetch_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    backend = FailingCategory(None)
    cache = TrendingCache(backend, 3600.0)
    cache.start()
    labels = {"code": "UNAVAILABLE"}
    before = _sample("vitrine_gateway_trending_category_errors_total", labels)
    try:
        with caplog.at_level(logging.WARNING, logger="services.gateway.fallback"):
            for category in ("shoes", "hats"):
                constraints = recommend_pb2.Constraints(include_categories=[category])
                cache.items(5, constraints)  # answered from the global list; asks for the category's
                await asyncio.wait_for(asyncio.gather(*cache._fetches, return_exceptions=True), 5)
    finally:
        await cache.stop()
    assert _sample("vitrine_gateway_trending_category_errors_total", labels) == before + 2
    logged = [r for r in caplog.records if "category's trending list failed" in r.getMessage()]
    assert len(logged) == (0 if before else 1)
