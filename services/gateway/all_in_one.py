"""Every service of the suite in one process, the gateway calling its backends in-process.

    python -m services.gateway.all_in_one --data-dir ./data [--port 50051 --profile-port 50052 ...]

The one-machine mode of issue #16 (Loki's `-target=all`): profile, segmentation,
recommendation and the gateway run in one process, each behind its own gRPC server on its own
port with its own API, health and reflection (so every tool and test that talks to a service
still can), and the gateway's composer is injected with `InProcessStub`s of the same servicer
objects (services/gateway/inprocess.py) instead of channels. A Personalize then crosses two call
ends (the caller's and the gateway's) instead of eight. In Kubernetes nothing changes: each
service is its own Deployment, started as `python -m services.<name>`.

Each service reads its own settings from its environment variables (VITRINE_PROFILE_*, ...) as
when it runs alone; the flags here set what must agree between them (host, ports, data
directory, token, log level). `--no-in-process` keeps one process but has the gateway call over
loopback gRPC (a measurement aid: it separates the cost of the calls from that of sharing one
interpreter).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from services.common.channel import channel_for
from services.common.config import ServerConfig, load_config
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.server import RunningServer, build_server, install_event_loop, wait_for_stop_signal
from services.gateway.app import Backends, GatewayService
from services.gateway.config import DEFAULT_PORT, GatewayConfig
from services.gateway.inprocess import Captured
from vitrine.v1 import profile_pb2_grpc, recommend_pb2_grpc, segment_pb2_grpc

log = logging.getLogger(__name__)

PROFILE = "vitrine.v1.ProfileService"
SEGMENTS = "vitrine.v1.SegmentService"
RECOMMEND = "vitrine.v1.RecommendService"


@dataclasses.dataclass(frozen=True)
class AllInOneConfig(ServerConfig):
    """`port` is the gateway's; the backends listen on their own ports."""

    data_dir: str = dataclasses.field(default="./data", metadata={"help": "data directory of every service"})
    profile_port: int = dataclasses.field(default=50052, metadata={"help": "profile service port"})
    segmentation_port: int = dataclasses.field(default=50053, metadata={"help": "segmentation service port"})
    recommendation_port: int = dataclasses.field(default=50054, metadata={"help": "recommendation service port"})
    in_process: bool = dataclasses.field(
        default=True, metadata={"help": "the gateway calls its backends in-process (off: over loopback gRPC)"})
    uvloop: bool = dataclasses.field(default=True, metadata={"help": "run on uvloop"})


def _local(host: str) -> str:
    """Where to reach a server bound to `host` from this process."""
    return "127.0.0.1" if host in ("0.0.0.0", "[::]", "::", "") else host


def _shared(config: AllInOneConfig) -> dict[str, Any]:
    return {"host": config.host, "auth_token": config.auth_token, "log_level": config.log_level,
            "metrics_port": -1, "tls_cert_file": config.tls_cert_file, "tls_key_file": config.tls_key_file,
            "tls_ca_file": config.tls_ca_file}


def backend_config(config: AllInOneConfig, name: str, profile_address: str) -> ServerConfig:
    """A backend's config: its own environment variables, then what must agree between them."""
    from services.profile.config import ProfileConfig
    from services.recommendation.config import RecommendationConfig
    from services.segmentation.config import SegmentationConfig

    shared = _shared(config)
    if name == "profile":
        return dataclasses.replace(load_config(ProfileConfig, "profile", []), port=config.profile_port,
                                   data_dir=config.data_dir, **shared)
    if name == "segmentation":
        return dataclasses.replace(load_config(SegmentationConfig, "segmentation", []),
                                   port=config.segmentation_port, data_dir=config.data_dir,
                                   profile_addresses=profile_address, **shared)
    return dataclasses.replace(load_config(RecommendationConfig, "recommendation", []),
                               port=config.recommendation_port, data_dir=config.data_dir,
                               profile_addresses=profile_address, **shared)


def gateway_config(config: AllInOneConfig, addresses: dict[str, str]) -> GatewayConfig:
    return dataclasses.replace(
        load_config(GatewayConfig, "gateway", []), port=config.port, **_shared(config),
        profile_addresses=addresses["profile"], segmentation_address=addresses["segmentation"],
        recommendation_address=addresses["recommendation"])


def _build(name: str, config: ServerConfig) -> Any:
    if name == "profile":
        from services.profile.app import build_service as build_profile
        return build_profile(config)  # type: ignore[arg-type]
    if name == "segmentation":
        from services.segmentation.app import build_service as build_segmentation
        return build_segmentation(config)  # type: ignore[arg-type]
    from services.recommendation.app import build_service as build_recommendation
    return build_recommendation(config)  # type: ignore[arg-type]


class AllInOne:
    """The four services started in one event loop; `stop()` stops the gateway first."""

    def __init__(self, config: AllInOneConfig) -> None:
        self.config = config
        self.servers: dict[str, RunningServer] = {}
        self.captured: dict[str, Captured] = {}
        self._channels: list[Any] = []

    async def start(self) -> None:
        addresses: dict[str, str] = {}
        try:
            for name in ("profile", "segmentation", "recommendation"):
                service_config = backend_config(self.config, name, addresses.get("profile", ""))
                captured = self.captured[name] = Captured(_build(name, service_config))
                running = self.servers[name] = await build_server(service_config, captured)
                addresses[name] = f"{_local(self.config.host)}:{running.port}"  # the real port (0 = any free one)
            gw_config = gateway_config(self.config, addresses)
            backends = self.backends(gw_config) if self.config.in_process else None
            self.servers["gateway"] = await build_server(gw_config, GatewayService(gw_config, backends))
        except BaseException:
            await self.stop()
            raise

    def backends(self, gw_config: GatewayConfig) -> Backends:
        """In-process stubs; streaming methods go over a channel to the service's own port."""
        def remote(address: str) -> Any:
            channel = channel_for(address, gw_config, tls=gw_config.backend_tls)
            self._channels.append(channel)
            return channel

        profile = self.captured["profile"].stub(
            PROFILE, profile_pb2_grpc.ProfileServiceStub(remote(gw_config.profile_addresses)))
        segments = self.captured["segmentation"].stub(
            SEGMENTS, segment_pb2_grpc.SegmentServiceStub(remote(gw_config.segmentation_address)))
        recommend = self.captured["recommendation"].stub(
            RECOMMEND, recommend_pb2_grpc.RecommendServiceStub(remote(gw_config.recommendation_address)))
        return Backends([profile], segments, recommend)

    async def stop(self, grace: float | None = None) -> None:
        for name in ("gateway", "recommendation", "segmentation", "profile"):
            running = self.servers.pop(name, None)
            if running is not None:
                await running.stop(grace)
        for channel in self._channels:
            await channel.close()
        self._channels.clear()


async def serve(config: AllInOneConfig) -> None:
    suite = AllInOne(config)
    await suite.start()
    log.info("all services serving in one process (gateway on %s:%d, in-process calls %s)", config.host,
             suite.servers["gateway"].port, "on" if config.in_process else "off")
    await wait_for_stop_signal()
    log.info("shutting down (grace %.1fs)", config.grace_seconds)
    await suite.stop(config.grace_seconds)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(AllInOneConfig, "all_in_one", list(argv or []), defaults={"port": DEFAULT_PORT},
                         description="every Vitrine service in one process, the gateway calling them in-process")
    configure_logging("all-in-one", config.log_level)
    start_metrics_server(config.metrics_port)
    if config.uvloop:
        install_event_loop()
    asyncio.run(serve(config))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
