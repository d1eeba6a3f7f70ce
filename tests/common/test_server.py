"""The shared scaffolding through a real in-process server: health, reflection, auth,
readiness, error mapping, metrics and graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from services.common.channel import open_channel
from services.common.config import ServerConfig, load_config
from services.common.errors import InvalidArgument, NotFound
from services.common.server import build_server
from tests.support import assert_status
from vitrine.health import wait_serving_async
from vitrine.ports import free_port

ECHO = "/test.Echo/Echo"
WAIT_S = 10.0  # bound on every wait for an event in these tests


class EchoService:
    """A byte-echo service: enough to exercise the scaffolding without a proto."""

    name = "echo"
    service_names: Sequence[str] = ("test.Echo",)

    def __init__(self, hold_start: bool = False) -> None:
        self.stopped = False
        # Events instead of sleeps: a test sees a call or the start-up begin, and lets it go on.
        self.starting = asyncio.Event()
        self.may_start = asyncio.Event()
        if not hold_start:
            self.may_start.set()
        self.slow_entered = asyncio.Event()
        self.release_slow = asyncio.Event()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if request == b"bad":
                raise InvalidArgument("payload 'bad' is not allowed; send anything else")
            if request == b"missing":
                raise NotFound("no such thing")
            if request == b"boom":
                raise RuntimeError("bug")
            if request == b"slow":
                self.slow_entered.set()
                await asyncio.wait_for(self.release_slow.wait(), WAIT_S)
            return request

        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))

    async def start(self) -> None:
        self.starting.set()
        await asyncio.wait_for(self.may_start.wait(), WAIT_S)

    async def stop(self) -> None:
        self.stopped = True


def config(**overrides: object) -> ServerConfig:
    return ServerConfig(**{"port": 0, **overrides})  # type: ignore[arg-type]


async def test_echo_health_and_reflection() -> None:
    running = await build_server(config(), EchoService())
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            assert await channel.unary_unary(ECHO)(b"hi", timeout=5) == b"hi"
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", "test.Echo"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for answer in stub.ServerReflectionInfo(iter([request]), timeout=5):
                names = {s.name for s in answer.list_services_response.service}
                assert {"test.Echo", "grpc.health.v1.Health"} <= names
    finally:
        await running.stop(0)
    assert running.service.stopped


async def test_domain_errors_map_to_status_codes() -> None:
    running = await build_server(config(), EchoService())
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = channel.unary_unary(ECHO)
            err = await assert_status(call(b"bad", timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
            assert "not allowed" in err.details()
            await assert_status(call(b"missing", timeout=5), grpc.StatusCode.NOT_FOUND)
            err = await assert_status(call(b"boom", timeout=5), grpc.StatusCode.INTERNAL)
            assert "bug" not in err.details()  # internals stay in the logs
            assert await call(b"after", timeout=5) == b"after"
    finally:
        await running.stop(0)
    sample = REGISTRY.get_sample_value(
        "vitrine_grpc_server_handled_total", {"service": "echo", "method": ECHO, "code": "INVALID_ARGUMENT"}
    )
    assert sample is not None and sample >= 1


async def test_bearer_token_required_when_configured() -> None:
    running = await build_server(config(auth_token="s3cret"), EchoService())
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            await assert_status(channel.unary_unary(ECHO)(b"x", timeout=5), grpc.StatusCode.UNAUTHENTICATED)
            health = health_pb2_grpc.HealthStub(channel)  # probes need no token
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with open_channel(running.address, auth_token="wrong") as channel:
            await assert_status(channel.unary_unary(ECHO)(b"x", timeout=5), grpc.StatusCode.UNAUTHENTICATED)
        async with open_channel(running.address, auth_token="s3cret") as channel:
            assert await channel.unary_unary(ECHO)(b"x", timeout=5) == b"x"
    finally:
        await running.stop(0)


async def test_not_serving_until_started() -> None:
    service = EchoService(hold_start=True)
    port = free_port()
    task = asyncio.create_task(build_server(config(port=port), service))
    try:
        await asyncio.wait_for(service.starting.wait(), WAIT_S)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await assert_status(channel.unary_unary(ECHO)(b"x", timeout=5), grpc.StatusCode.UNAVAILABLE)
            assert not task.done()
            service.may_start.set()
            await asyncio.wait_for(asyncio.shield(task), WAIT_S)
            await wait_serving_async(channel, WAIT_S)
            assert await channel.unary_unary(ECHO)(b"x", timeout=5) == b"x"
    finally:
        service.may_start.set()
        await (await task).stop(0)


async def test_graceful_stop_lets_in_flight_calls_finish() -> None:
    service = EchoService()
    running = await build_server(config(), service)
    async with grpc.aio.insecure_channel(running.address) as channel:
        slow = asyncio.ensure_future(channel.unary_unary(ECHO)(b"slow", timeout=5))
        await asyncio.wait_for(service.slow_entered.wait(), WAIT_S)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(running.stop(2.0))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING  # stop has begun
        service.release_slow.set()
        assert await slow == b"slow"
        await stopping


async def test_concurrency_cap_answers_resource_exhausted() -> None:
    service = EchoService()
    running = await build_server(config(max_concurrent_rpcs=1), service)
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = channel.unary_unary(ECHO)
            slow = asyncio.ensure_future(call(b"slow", timeout=5))
            await asyncio.wait_for(service.slow_entered.wait(), WAIT_S)
            await assert_status(call(b"x", timeout=5), grpc.StatusCode.RESOURCE_EXHAUSTED)
            service.release_slow.set()
            assert await slow == b"slow"
    finally:
        await running.stop(0)


def test_config_precedence_flag_over_env_over_default() -> None:
    env = {"VITRINE_ECHO_PORT": "7000", "VITRINE_AUTH_TOKEN": "shared", "VITRINE_LOG_LEVEL": "DEBUG"}
    cfg = load_config(ServerConfig, "echo", ["--log-level", "WARNING"], env)
    assert (cfg.port, cfg.auth_token, cfg.log_level) == (7000, "shared", "WARNING")
    assert load_config(ServerConfig, "echo", [], {}, defaults={"port": 50099}).port == 50099
    with pytest.raises(ValueError, match="VITRINE_ECHO_PORT"):
        load_config(ServerConfig, "echo", [], {"VITRINE_ECHO_PORT": "abc"})
