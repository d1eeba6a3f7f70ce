"""The real services in-process on free ports (1 or several profile shards) with the gateway
in front, loaded with a small demo store through the colleagues' loader."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")

from services.common.server import RunningServer, build_server
from services.gateway.app import GatewayService
from services.gateway.config import GatewayConfig
from vitrine.v1 import gateway_pb2_grpc, profile_pb2_grpc

DEMO_PRODUCTS = 300
DEMO_SHOPPERS = 120


def _profile(data_dir: Path, port: int = 0) -> tuple[object, object]:
    from services.profile.app import build_service
    from services.profile.config import ProfileConfig

    config = ProfileConfig(port=port, data_dir=str(data_dir), purge_interval_seconds=0)
    return config, build_service(config)


@dataclasses.dataclass
class RealSuite:
    root: Path
    shards: list[RunningServer]
    segmentation: RunningServer
    recommendation: RunningServer
    gateway: RunningServer
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.PersonalizationServiceStub
    shard_channels: list[grpc.aio.Channel]

    @property
    def service(self) -> GatewayService:
        return self.gateway.service  # type: ignore[return-value]

    def shard_stub(self, index: int) -> profile_pb2_grpc.ProfileServiceStub:
        return profile_pb2_grpc.ProfileServiceStub(self.shard_channels[index])

    async def stop_recommendation(self) -> int:
        await self.recommendation.stop(0)
        return self.recommendation.port

    async def start_recommendation(self, port: int) -> None:
        addresses = ",".join(shard.address for shard in self.shards)
        self.recommendation = await _start_recommendation(self.root, port, addresses)

    async def close(self) -> None:
        await self.channel.close()
        for channel in self.shard_channels:
            await channel.close()
        await self.gateway.stop(0)
        for running in (self.segmentation, self.recommendation, *self.shards):
            await running.stop(0)


async def _start_recommendation(root: Path, port: int = 0, profile_addresses: str = "") -> RunningServer:
    from services.recommendation.app import build_service
    from services.recommendation.config import RecommendationConfig

    # The signals follow the suite's own shards (never a profile service that happens to run on 50052).
    config = RecommendationConfig(port=port, data_dir=str(root / "reco"), snapshot_seconds=0,
                                  profile_addresses=profile_addresses, follow_events=bool(profile_addresses))
    return await build_server(config, build_service(config))


async def start_real_suite(root: Path, shards: int = 1, *, load: bool = True) -> RealSuite:
    from services.segmentation.app import build_service as build_segmentation
    from services.segmentation.config import SegmentationConfig

    profile_servers = []
    for i in range(shards):
        config, service = _profile(root / f"shard-{i}")
        profile_servers.append(await build_server(config, service))  # type: ignore[arg-type]
    addresses = ",".join(s.address for s in profile_servers)
    seg_config = SegmentationConfig(port=0, data_dir=str(root / "seg"), profile_addresses=addresses)
    segmentation = await build_server(seg_config, build_segmentation(seg_config))
    recommendation = await _start_recommendation(root, profile_addresses=addresses)
    config = GatewayConfig(port=0, profile_addresses=addresses, segmentation_address=segmentation.address,
                           recommendation_address=recommendation.address, trending_refresh_seconds=0.5,
                           deadline_ms=500)  # generous: the test machine is shared and noisy
    gateway = await build_server(config, GatewayService(config))
    channel = grpc.aio.insecure_channel(gateway.address)
    suite = RealSuite(root, profile_servers, segmentation, recommendation, gateway, channel,
                      gateway_pb2_grpc.PersonalizationServiceStub(channel),
                      [grpc.aio.insecure_channel(s.address) for s in profile_servers])
    if load:
        from vitrine.demo.config import DemoConfig
        from vitrine.demo.loader import load_demo

        report = await load_demo(
            DemoConfig(n_products=DEMO_PRODUCTS, n_shoppers=DEMO_SHOPPERS, seed=5),
            profile_addresses=[s.address for s in profile_servers], gateway_address=gateway.address,
            segmentation_address=segmentation.address, recommendation_address=recommendation.address,
            progress=False)
        assert not report.errors, report.errors[:5]
        await suite.service.trending.refresh()
    return suite


@contextlib.asynccontextmanager
async def real_suite(root: Path, shards: int = 1) -> AsyncIterator[RealSuite]:
    """`start_real_suite` with the demo store, closed on the way out (the modules' suite fixtures)."""
    suite = await start_real_suite(root, shards)
    try:
        yield suite
    finally:
        await suite.close()
