"""Fixtures: the gateway in-process on port 0 in front of fault-injecting fake backends."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.config import ServerConfig
from services.common.server import RunningServer, build_server
from services.gateway.app import GatewayService
from services.gateway.config import GatewayConfig
from vitrine.loadtest.fakes import FakeProfile, FakeRecommendation, FakeSegmentation
from vitrine.v1 import gateway_pb2_grpc


@dataclasses.dataclass
class FakeSuite:
    profile: FakeProfile
    segmentation: FakeSegmentation
    recommendation: FakeRecommendation
    servers: dict[str, RunningServer]
    gateway: RunningServer
    stub: gateway_pb2_grpc.PersonalizationServiceStub

    @property
    def service(self) -> GatewayService:
        return self.gateway.service  # type: ignore[return-value]

    async def take_down(self, name: str) -> int:
        running = self.servers[name]
        await running.stop(0)
        return running.port

    async def bring_back(self, name: str, port: int) -> None:
        service = getattr(self, name)
        self.servers[name] = await build_server(ServerConfig(port=port), service)


def gateway_config(**overrides: object) -> GatewayConfig:
    # A generous default budget: the test machine is shared and noisy. Tests about deadlines
    # set `deadline_ms` in the request.
    values: dict[str, object] = {"port": 0, "deadline_ms": 1000, "trending_refresh_seconds": 0.2}
    values.update(overrides)
    return GatewayConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def fake_suite() -> AsyncIterator[FakeSuite]:
    fakes = {"profile": FakeProfile(), "segmentation": FakeSegmentation(), "recommendation": FakeRecommendation()}
    servers = {name: await build_server(ServerConfig(port=0), fake) for name, fake in fakes.items()}
    config = gateway_config(
        profile_addresses=servers["profile"].address,
        segmentation_address=servers["segmentation"].address,
        recommendation_address=servers["recommendation"].address,
    )
    gateway = await build_server(config, GatewayService(config))
    channel = grpc.aio.insecure_channel(gateway.address)
    suite = FakeSuite(fakes["profile"], fakes["segmentation"], fakes["recommendation"], servers, gateway,
                      gateway_pb2_grpc.PersonalizationServiceStub(channel))
    try:
        yield suite
    finally:
        await channel.close()
        await gateway.stop(0)
        for running in suite.servers.values():
            await running.stop(0)
