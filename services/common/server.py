"""Build, run and stop a Vitrine gRPC service.

`build_server(config, service)` binds and starts a grpc.aio server with health,
reflection and the shared interceptor, opens the service (store, model, warm-up)
and only then reports SERVING. Tests call it with port 0; only `run_service`
installs signal handlers and blocks until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.config import ServerConfig
from services.common.interceptors import ServerInterceptor, ServiceGate
from services.common.logs import configure_logging
from services.common.metrics import SERVICE_READY, start_metrics_server

log = logging.getLogger(__name__)

# Long-lived connections from the gateway: let them ping, and keep them open.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
    # Recycle connections now and then so long-lived clients re-resolve DNS and spread over
    # new replicas after a scale-up. The age only stops new calls on a connection; calls in
    # flight (a Train or a full ScanEvents can take many minutes) get an hour to finish.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 3_600_000),
)


class Service(Protocol):
    """What a service gives the scaffolding: its servicers and its lifecycle."""

    name: str  # short name: "profile", "segmentation", ...

    @property
    def service_names(self) -> Sequence[str]:
        """Full gRPC service names, for health and reflection."""
        ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None:
        """Open stores, load models, compile kernels: after this the service is ready."""
        ...

    async def stop(self) -> None:
        """Flush and close; called after the server stopped taking calls."""
        ...


@dataclasses.dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service: Service
    gate: ServiceGate

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, then close the service."""
        await self.health.enter_graceful_shutdown()
        self.gate.ready = False
        SERVICE_READY.labels(self.service.name).set(0)
        await self.server.stop(grace)
        await self.service.stop()


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert_file:
        return None
    root = _read(config.tls_ca_file) if config.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(config.tls_key_file), _read(config.tls_cert_file))],
        root_certificates=root,
        require_client_auth=False,
    )


async def build_server(
    config: ServerConfig, service: Service, *, extra_options: Sequence[tuple[str, int]] = ()
) -> RunningServer:
    """Start serving `service` on config.host:config.port; returns once it is SERVING."""
    gate = ServiceGate(config.max_concurrent_rpcs)
    max_bytes = config.max_message_mb * 1024 * 1024
    # gRPC keeps the first value of a repeated option, so merge here and let `extra_options` win.
    merged = dict(SERVER_OPTIONS)
    merged["grpc.max_receive_message_length"] = max_bytes
    merged["grpc.max_send_message_length"] = max_bytes
    merged.update(dict(extra_options))
    options = list(merged.items())
    server = grpc.aio.server(
        interceptors=[ServerInterceptor(service.name, gate, config.auth_token)], options=options
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service.add_to_server(server)
    names = (*service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    for name in ("", *service.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    await server.start()
    try:
        await service.start()
    except BaseException:
        await server.stop(None)
        raise
    gate.ready = True
    for name in ("", *service.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    SERVICE_READY.labels(service.name).set(1)
    log.info("%s serving on %s:%d", service.name, config.host, port,
             extra={"fields": {"port": port, "tls": credentials is not None}})
    return RunningServer(server, port, health_servicer, service, gate)


def install_event_loop() -> None:
    """uvloop where available: measurably less overhead per RPC (see benchmarks/README.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional on unusual platforms
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def wait_for_stop_signal() -> None:
    """Until SIGTERM or SIGINT: what every server of the suite waits for before its graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signal(config: ServerConfig, service: Service) -> None:
    running = await build_server(config, service)
    await wait_for_stop_signal()
    log.info("%s shutting down (grace %.1fs)", service.name, config.grace_seconds)
    await running.stop(config.grace_seconds)
    log.info("%s stopped", service.name)


def run_service(config: ServerConfig, service: Service) -> None:
    """Entry point of `python -m services.<name>`: logs, metrics, serve until SIGTERM."""
    configure_logging(service.name, config.log_level)
    start_metrics_server(config.metrics_port)
    install_event_loop()
    asyncio.run(serve_until_signal(config, service))
