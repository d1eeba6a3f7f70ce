"""An error answer to a caller that has already gone (cancelled, or its deadline passed) is not a
server error. The fuzzer found it on FollowEvents (the slow fuzz test failed before the fix): an
undecodable request whose caller had cancelled made the abort itself fail (ExecuteBatchError),
which was logged with a traceback and counted INTERNAL, then a second abort raised UsageError.
That race is not reproducible on demand; this test pins the deterministic neighbour: a handler
that raises after its caller cancelled is not counted INTERNAL and logs no ERROR."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.config import ServerConfig
from services.common.errors import InvalidArgument
from services.common.server import build_server

METHOD = "/test.Gone/Follow"


class GoneService:
    name = "gone"
    service_names: Sequence[str] = ("test.Gone",)

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()  # never set: the handler waits until it is cancelled
        self.finished = asyncio.Event()
        self.started = asyncio.Event()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        async def follow(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            try:
                self.started.set()
                try:
                    await self.cancelled.wait()
                except asyncio.CancelledError:
                    pass  # like a handler that finishes its step before it sees the caller left
                raise InvalidArgument("too late to tell anyone")
                yield b"never"  # pragma: no cover - makes this an async generator
            finally:
                self.finished.set()

        handler = grpc.method_handlers_generic_handler(
            "test.Gone", {"Follow": grpc.unary_stream_rpc_method_handler(follow)})
        server.add_generic_rpc_handlers((handler,))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_abort_after_the_caller_left_is_counted_not_an_internal_error(
        caplog: pytest.LogCaptureFixture) -> None:
    service = GoneService()
    running = await build_server(ServerConfig(port=0), service)
    internal = {"service": "gone", "method": METHOD, "code": "INTERNAL"}
    abandoned_before = sample("vitrine_grpc_server_abandoned_responses_total", {"method": METHOD})
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = channel.unary_stream(METHOD)(b"", timeout=10)
            reading = asyncio.ensure_future(call.read())
            await asyncio.wait_for(service.started.wait(), 10)
            call.cancel()  # before the server sent anything, as the fuzzer's short-lived follows do
            with pytest.raises(asyncio.CancelledError):
                await reading
            with caplog.at_level(logging.INFO):
                await asyncio.wait_for(service.finished.wait(), 10)
                await running.stop(5)  # waits for the handler, and the interceptor around it, to end
    finally:
        await running.stop(0)
    assert sample("vitrine_grpc_server_handled_total", internal) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "Gone" in r.getMessage()]
    assert sample("vitrine_grpc_server_abandoned_responses_total", {"method": METHOD}) >= abandoned_before
