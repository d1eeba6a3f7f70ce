"""The demo loader's channels: gRPC retries transient failures itself (service config retry policy)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from services.common.config import ServerConfig
from services.common.server import build_server
from tests.support import assert_status
from vitrine.demo.loader import RETRIES, demo_channel

UNARY = "/test.Flaky/Unary"
STREAM = "/test.Flaky/Stream"


class FlakyService:
    """Fails the first `failures` attempts of each method with `code`, then echoes."""

    name = "flaky"
    service_names: Sequence[str] = ("test.Flaky",)

    def __init__(self, failures: int, code: grpc.StatusCode) -> None:
        self.failures, self.code = failures, code
        self.attempts: dict[str, int] = {"unary": 0, "stream": 0}

    def add_to_server(self, server: grpc.aio.Server) -> None:
        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.attempts["unary"] += 1
            if self.attempts["unary"] <= self.failures:
                await context.abort(self.code, "try again")
            return request

        async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            received = b"".join([r async for r in requests])
            self.attempts["stream"] += 1
            if self.attempts["stream"] <= self.failures:
                await context.abort(self.code, "try again")
            return received

        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Flaky", {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.stream_unary_rpc_method_handler(stream),
        }),))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_transient_failures_are_retried_by_grpc(code: grpc.StatusCode) -> None:
    service = FlakyService(RETRIES - 1, code)
    running = await build_server(ServerConfig(port=0), service)
    try:
        async with demo_channel(running.address) as channel:
            assert await channel.unary_unary(UNARY)(b"x", timeout=20) == b"x"
            batch = [b"a" * 100_000] * 20  # 2 MB: past gRPC's default retry buffer of 256 KiB
            assert await channel.stream_unary(STREAM)(iter(batch), timeout=20) == b"".join(batch)
        assert service.attempts == {"unary": RETRIES, "stream": RETRIES}
    finally:
        await running.stop(0)


async def test_giving_up_after_the_last_attempt_and_never_retrying_a_caller_error() -> None:
    service = FlakyService(RETRIES, grpc.StatusCode.UNAVAILABLE)
    running = await build_server(ServerConfig(port=0), service)
    try:
        async with demo_channel(running.address) as channel:
            await assert_status(channel.unary_unary(UNARY)(b"x", timeout=20), grpc.StatusCode.UNAVAILABLE)
        assert service.attempts["unary"] == RETRIES
    finally:
        await running.stop(0)
    service = FlakyService(1, grpc.StatusCode.INVALID_ARGUMENT)
    running = await build_server(ServerConfig(port=0), service)
    try:
        async with demo_channel(running.address) as channel:
            await assert_status(channel.unary_unary(UNARY)(b"x", timeout=20), grpc.StatusCode.INVALID_ARGUMENT)
        assert service.attempts["unary"] == 1
    finally:
        await running.stop(0)
