"""The other services over gRPC, as sending.Backends: every call under a deadline; a backend that
is down or slow raises Unavailable so the message is tried again later, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from services.common.channel import channel_for
from services.common.errors import Unavailable
from services.journeys import config as C
from services.journeys.config import JourneysConfig
from vitrine.v1 import (
    common_pb2,
    profile_pb2,
    profile_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED})


def _unavailable(service: str, err: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"{service}: {err.code().name}: {err.details()}")


class GrpcBackends:
    def __init__(self, config: JourneysConfig, timeout: float = C.BACKEND_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._channels = [channel_for(a, config) for a in config.profile_targets()]
        self._channels.append(channel_for(config.recommendation_address, config))
        self.profile_stubs = [profile_pb2_grpc.ProfileServiceStub(c) for c in self._channels[:-1]]
        self.recommend_stub = recommend_pb2_grpc.RecommendServiceStub(self._channels[-1])
        self.segment_stub = None
        if config.segmentation_address:
            channel = channel_for(config.segmentation_address, config)
            self._channels.append(channel)
            self.segment_stub = segment_pb2_grpc.SegmentServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def profile(self, user_id: str, source: int) -> common_pb2.Profile | None:
        stub = self.profile_stubs[source if source < len(self.profile_stubs) else 0]
        try:
            return await stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable("profile", err) from err

    async def evaluate(self, profile: common_pb2.Profile, now_ms: int) -> segment_pb2.EvaluateResponse:
        if self.segment_stub is None:
            raise Unavailable("a journey has a segment filter or an offer but no --segmentation-address is set")
        try:
            return await self.segment_stub.Evaluate(segment_pb2.EvaluateRequest(profile=profile, now_ms=now_ms),
                                                    timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise _unavailable("segmentation", err) from err

    async def products(self, product_ids: Sequence[str]) -> dict[str, common_pb2.Product]:
        async def one(product_id: str) -> common_pb2.Product | None:
            try:
                return await self.recommend_stub.GetProduct(recommend_pb2.GetProductRequest(product_id=product_id),
                                                            timeout=self.timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise _unavailable("recommendation", err) from err

        found = await asyncio.gather(*(one(p) for p in product_ids))
        return {p.product_id: p for p in found if p is not None}

    async def recommend(self, request: recommend_pb2.RecommendRequest) -> list[recommend_pb2.ScoredProduct]:
        try:
            response = await self.recommend_stub.Recommend(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() in RETRYABLE:
                raise _unavailable("recommendation", err) from err
            return []   # a request recommendation cannot answer (e.g. an unknown anchor): no items
        return list(response.items)
