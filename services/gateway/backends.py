"""What the gateway's composer needs of each backend, as Protocols.

The composer is handed the generated aio stubs (segmentation, recommendation) and the shard
router (profile) in the service, in-process stubs in the all-in-one process, and plain objects
in its unit tests; these say which calls each must answer, so mypy checks every one of them.
A generated stub's method is a multi-callable whose call is awaitable, which these match.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from vitrine.v1 import common_pb2, profile_pb2, recommend_pb2, segment_pb2


class ProfileBackend(Protocol):
    """The profile shards behind the router (services.gateway.router.ProfileRouter)."""

    async def get_profile(self, user_id: str, seconds: float) -> common_pb2.Profile | None: ...

    async def track(self, request: profile_pb2.TrackRequest, seconds: float = ...) -> profile_pb2.TrackResponse: ...

    async def track_batch(self, request: profile_pb2.TrackBatchRequest,
                          seconds: float = ...) -> profile_pb2.TrackSummary: ...


class SegmentBackend(Protocol):
    """SegmentService, as the composer calls it."""

    def Evaluate(self, request: segment_pb2.EvaluateRequest, *,
                 timeout: float | None = ...) -> Awaitable[segment_pb2.EvaluateResponse]: ...


class RecommendBackend(Protocol):
    """RecommendService, as the composer calls it."""

    def Recommend(self, request: recommend_pb2.RecommendRequest, *,
                  timeout: float | None = ...) -> Awaitable[recommend_pb2.RecommendResponse]: ...

    def RecommendBatch(self, request: recommend_pb2.RecommendBatchRequest, *,
                       timeout: float | None = ...) -> Awaitable[recommend_pb2.RecommendBatchResponse]: ...

    def Rank(self, request: recommend_pb2.RankRequest, *,
             timeout: float | None = ...) -> Awaitable[recommend_pb2.RecommendResponse]: ...
