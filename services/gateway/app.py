"""Gateway service: long-lived channels to the backends, warm fallbacks, and main()."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.channel import channel_for
from services.common.config import load_config
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.server import build_server, install_event_loop, wait_for_stop_signal
from services.gateway.composer import Composer
from services.gateway.config import DEFAULT_PORT, EXPERIMENT_CALL_TIMEOUT_S, TRENDING_CALL_TIMEOUT_S, GatewayConfig
from services.gateway.experiments import ExperimentSlots, ExposureLog
from services.gateway.fallback import TrendingCache
from services.gateway.router import ProfileRouter
from services.gateway.servicer import PersonalizationServicer
from vitrine.v1 import gateway_pb2_grpc, recommend_pb2_grpc, segment_pb2_grpc

log = logging.getLogger(__name__)

# How long start-up waits for each backend connection (it starts anyway: backends may come later).
CONNECT_WAIT_S = 1.0


@dataclasses.dataclass(frozen=True)
class Backends:
    """The backends the composer calls, when the caller provides them (e.g. in-process stubs of
    services sharing this process) instead of the gateway opening channels to their addresses."""

    profile_shards: Sequence[Any]  # one ProfileService stub per shard, in shard order
    segments: Any                  # SegmentService stub
    recommend: Any                 # RecommendService stub


class GatewayService:
    name = "gateway"
    service_names: Sequence[str] = ("vitrine.v1.PersonalizationService",)

    def __init__(self, config: GatewayConfig, backends: Backends | None = None) -> None:
        if not config.profile_shards and backends is None:
            raise ValueError("profile_addresses names no shard")
        self.config = config
        self.backends = backends
        self.servicer = PersonalizationServicer()
        self.composer: Composer | None = None
        self.router: ProfileRouter | None = None
        self.trending: TrendingCache | None = None
        self.experiments: ExperimentSlots | None = None
        self.exposures: ExposureLog | None = None
        self._channels: list[grpc.aio.Channel] = []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_PersonalizationServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        config = self.config
        tls = config.backend_tls
        segments: Any
        recommend: Any
        if self.backends is not None:
            self.router = ProfileRouter(self.backends.profile_shards)
            segments, recommend = self.backends.segments, self.backends.recommend
        else:
            self.router = ProfileRouter.open(config.profile_shards, config, tls=tls,
                                             partitions=config.event_log_partitions if config.event_log else 0)
            segmentation = channel_for(config.segmentation_address, config, tls=tls)
            recommendation = channel_for(config.recommendation_address, config, tls=tls)
            self._channels = [segmentation, recommendation]
            segments = segment_pb2_grpc.SegmentServiceStub(segmentation)
            recommend = recommend_pb2_grpc.RecommendServiceStub(recommendation)
        self.trending = TrendingCache(recommend, config.trending_refresh_seconds)
        self.experiments = ExperimentSlots(segments)
        self.exposures = ExposureLog(self.router)
        self.composer = Composer(self.router, segments, recommend, self.trending,
                                 deadline_ms=config.deadline_ms, experiments=self.experiments,
                                 exposures=self.exposures)
        self.servicer.bind(self.composer, self.router)
        # Connect now rather than on the first request; a backend that is down is not fatal.
        channels = [*self.router._channels, *self._channels]
        await asyncio.gather(*(self._connect(c) for c in channels))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.trending.refresh(), TRENDING_CALL_TIMEOUT_S)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.experiments.refresh(), EXPERIMENT_CALL_TIMEOUT_S)
        self.trending.start()
        self.experiments.start()
        self.exposures.start()

    @staticmethod
    async def _connect(channel: grpc.aio.Channel) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT_S)

    async def stop(self) -> None:
        if self.trending is not None:
            await self.trending.stop()
        if self.experiments is not None:
            await self.experiments.stop()
        if self.exposures is not None:
            await self.exposures.stop()  # writes what is queued first (bounded)
        if self.router is not None:
            await self.router.close()
        for channel in self._channels:
            await channel.close()


def build_service(config: GatewayConfig) -> GatewayService:
    return GatewayService(config)


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    if not (config.reuse_port or config.processes > 1):
        return []
    # build_server lets these override the shared SERVER_OPTIONS (so_reuseport=0 there).
    return [("grpc.so_reuseport", 1)]


async def serve(config: GatewayConfig) -> None:
    service = build_service(config)
    running = await build_server(config, service, extra_options=server_options(config))
    await wait_for_stop_signal()
    log.info("gateway shutting down (grace %.1fs)", config.grace_seconds)
    await running.stop(config.grace_seconds)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(argv or [])
    config = load_config(GatewayConfig, "gateway", argv, defaults={"port": DEFAULT_PORT})
    configure_logging("gateway", config.log_level)
    children: list[subprocess.Popen[bytes]] = []
    if config.processes > 1:
        if config.port == 0:
            raise SystemExit("--processes > 1 needs a fixed --port (the processes share it with SO_REUSEPORT)")
        child_argv = [*argv, "--processes", "1", "--reuse-port", "--metrics-port", "-1"]
        for _ in range(config.processes - 1):
            children.append(subprocess.Popen([sys.executable, "-m", "services.gateway", *child_argv]))
        config = dataclasses.replace(config, reuse_port=True)
    try:
        start_metrics_server(config.metrics_port)
        if config.uvloop:
            install_event_loop()
        asyncio.run(serve(config))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(config.grace_seconds + 5)
            except subprocess.TimeoutExpired:
                child.kill()
