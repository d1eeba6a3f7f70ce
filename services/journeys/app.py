"""Journeys service: build from config, run until SIGTERM (`python -m services.journeys`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from services.common.config import load_config
from services.common.errors import Unavailable
from services.common.server import run_service
from services.common.tasks import cancel_and_wait
from services.journeys.backends import GrpcBackends
from services.journeys.config import DAY_MS, DEFAULT_PORT, HOUR_MS, SERVICE_NAME, JourneysConfig
from services.journeys.engine import Clock, JourneyEngine, wall_clock_ms
from services.journeys.following import Feeds
from services.journeys.sending import Backends, SendSettings
from services.journeys.servicer import JourneyServicer
from services.journeys.store import JourneyStore
from services.journeys.webhook import WebhookDelivery
from vitrine.v1 import journey_pb2, journey_pb2_grpc

log = logging.getLogger(__name__)


def send_settings(config: JourneysConfig) -> SendSettings:
    return SendSettings(
        store_timezone=config.store_timezone, quiet_start_hour=config.quiet_start_hour,
        quiet_end_hour=config.quiet_end_hour, frequency_cap=config.frequency_cap,
        frequency_window_ms=int(config.frequency_window_hours * HOUR_MS),
        attribution_ms=int(config.attribution_days * DAY_MS),
        visibility_ms=int(config.visibility_timeout_seconds * 1000),
        retry_ms=int(config.send_retry_seconds * 1000))


class _NotStarted:
    """The backends before start(): every call says so (the timer loop only runs after start)."""

    def __getattr__(self, name: str) -> Any:
        raise Unavailable("the journeys service has not started")


class JourneysService:
    """The Service object the scaffolding runs: opens the store and starts the feeds, the timer
    loop and the webhook on start; stops them and closes the store on stop. Tests may pass other
    backends and a controllable clock."""

    name = SERVICE_NAME
    service_names = (journey_pb2.DESCRIPTOR.services_by_name["JourneyService"].full_name,)

    def __init__(self, config: JourneysConfig, *, backends: Backends | None = None,
                 clock: Clock = wall_clock_ms) -> None:
        self.config = config
        self.store = JourneyStore(Path(config.data_dir) / SERVICE_NAME, map_size_mb=config.map_size_mb,
                                  sync=config.sync)
        self._backends = backends
        self._grpc_backends: GrpcBackends | None = None
        self.engine = JourneyEngine(self.store, backends or _NotStarted(), send_settings(config), clock=clock)
        self.feeds: Feeds | None = None
        self.webhook: WebhookDelivery | None = None
        self._purging: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        journey_pb2_grpc.add_JourneyServiceServicer_to_server(JourneyServicer(self.engine), server)

    async def start(self) -> None:
        # Channels and HTTP clients belong to the running event loop: made here, not in __init__.
        if self._backends is None:
            self._grpc_backends = GrpcBackends(self.config)
            self.engine.backends = self._grpc_backends
        await self.engine.start()
        if self.config.follow_feeds:
            self.feeds = Feeds(self.engine, self.config)
            self.feeds.start()
        if self.config.purge_interval_seconds > 0:
            self._purging = asyncio.create_task(self._purge_loop(), name="journeys-purge")
        if self.config.webhook_url:
            self.webhook = WebhookDelivery(self.engine, self.config.webhook_url, self.config.webhook_secret)
            self.webhook.start()

    async def _purge_loop(self) -> None:
        retention_ms = int(self.config.message_retention_days * DAY_MS)
        while True:
            await asyncio.sleep(self.config.purge_interval_seconds)  # a period, not a synchronisation
            try:
                messages, watches = await asyncio.to_thread(self.engine.purge, retention_ms)
                log.info("purged %d delivered messages and %d expired watches", messages, watches)
            except Exception:
                log.exception("purge failed; trying again next period")

    async def stop(self) -> None:
        await cancel_and_wait(self._purging)
        if self.feeds is not None:
            await self.feeds.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        await self.engine.stop()
        if self._grpc_backends is not None:
            await self._grpc_backends.close()
        self.store.close()


def build_service(config: JourneysConfig) -> JourneysService:
    return JourneysService(config)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(JourneysConfig, SERVICE_NAME, argv, defaults={"port": DEFAULT_PORT},
                         description="Vitrine journeys service: triggered messages from the event feed")
    run_service(config, build_service(config))
