"""The console's gRPC clients: one long-lived channel per backend, a deadline on every call.

Pages never see a grpc exception: `call` turns a failed call into `BackendError`, which
names the backend and says in words what went wrong, so a page can show a banner for the
part that failed and render the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.common.channel import open_channel
from services.console.config import CALL_TIMEOUT_S, ConsoleConfig
from vitrine.v1 import (
    gateway_pb2_grpc,
    journey_pb2_grpc,
    recommend_pb2_grpc,
    segment_pb2_grpc,
)

T = TypeVar("T")

# Codes that mean "this backend cannot answer now" rather than "your request is wrong".
_UNAVAILABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
})


@dataclasses.dataclass
class BackendError(Exception):
    """A call to `backend` failed with `code`; `details` is the server's message."""

    backend: str
    code: grpc.StatusCode
    details: str

    @property
    def unavailable(self) -> bool:
        return self.code in _UNAVAILABLE_CODES

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND

    @property
    def not_implemented(self) -> bool:
        return self.code == grpc.StatusCode.UNIMPLEMENTED

    def __str__(self) -> str:
        if self.not_implemented:
            return f"the {self.backend} service does not offer this yet"
        if self.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"the {self.backend} service did not answer in time"
        if self.code == grpc.StatusCode.UNAVAILABLE:
            return f"the {self.backend} service is unavailable"
        return f"{self.backend}: {self.details or self.code.name}"


class Backends:
    """Channels and stubs of every service the console reads; opened once, inside the event loop."""

    def __init__(self, config: ConsoleConfig) -> None:
        def channel(target: str) -> grpc.aio.Channel:
            return open_channel(target, auth_token=config.auth_token, tls_ca_file=config.tls_ca_file,
                                tls=config.backend_tls)

        self._channels = {
            "gateway": channel(config.gateway_address),
            "segmentation": channel(config.segmentation_address),
            "recommendation": channel(config.recommendation_address),
            "journeys": channel(config.journeys_address),
        }
        self.gateway = gateway_pb2_grpc.PersonalizationServiceStub(self._channels["gateway"])
        self.segments = segment_pb2_grpc.SegmentServiceStub(self._channels["segmentation"])
        self.recommend = recommend_pb2_grpc.RecommendServiceStub(self._channels["recommendation"])
        self.journeys = journey_pb2_grpc.JourneyServiceStub(self._channels["journeys"])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def call(backend: str, method: Callable[..., Awaitable[T]], request: Any,
               deadline_s: float = CALL_TIMEOUT_S) -> T:
    """`await method(request, timeout=deadline_s)`, a failure raised as `BackendError`."""
    try:
        return await method(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as err:
        raise BackendError(backend, err.code(), err.details() or "") from err


async def attempt(awaitable: Awaitable[T]) -> T | BackendError:
    """The awaited value, or the BackendError it raised (for parts of a page gathered together)."""
    try:
        return await awaitable
    except BackendError as err:
        return err


async def stream(backend: str, method: Callable[..., Any], request: Any, deadline_s: float) -> AsyncIterator[Any]:
    """The items of a server-streaming call; a failure (also mid-stream) raised as `BackendError`."""
    try:
        async for item in method(request, timeout=deadline_s):
            yield item
    except grpc.aio.AioRpcError as err:
        raise BackendError(backend, err.code(), err.details() or "") from err
