"""Profile service: build from config, run until SIGTERM (`python -m services.profile`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from services.common.config import load_config
from services.common.server import run_service
from services.eventlog.jetstream import JetStreamSettings
from services.profile.config import DEFAULT_PORT, SERVICE_NAME, ProfileConfig
from services.profile.engine import ProfileEngine
from services.profile.fold import DAY_MS, FoldSettings
from services.profile.scaleout import ScaleOutProfile, parse_servers
from services.profile.scaleout_servicer import ScaleOutServicer
from services.profile.servicer import ProfileServicer
from services.profile.store import LmdbProfileStore
from services.profile.writer import WriterProcess
from vitrine.v1 import profile_pb2, profile_pb2_grpc


class ProfileService:
    """The Service object the scaffolding runs: opens the store on start, closes it on stop."""

    name = SERVICE_NAME
    service_names = (profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name,)

    def __init__(self, config: ProfileConfig) -> None:
        self.config = config
        settings = FoldSettings(affinity_half_life_ms=config.affinity_half_life_days * DAY_MS)

        def open_store() -> LmdbProfileStore:
            return LmdbProfileStore(Path(config.data_dir) / SERVICE_NAME, map_size_mb=config.map_size_mb,
                                    sync=config.sync, settings=settings)

        # Scale-out: the shard consumer folds on its own thread; no writer process.
        writer = WriterProcess(Path(config.data_dir) / SERVICE_NAME, map_size_mb=config.map_size_mb,
                               sync=config.sync, settings=settings,
                               log_level=config.log_level) if config.writer_process and not config.event_log else None
        self.engine = ProfileEngine(open_store, retention_days=config.retention_days,
                                    idempotency_ttl_hours=config.idempotency_ttl_hours,
                                    batch_max_events=config.batch_max_events,
                                    purge_interval_seconds=config.purge_interval_seconds, writer=writer)
        self.shard: ScaleOutProfile | None = None
        if config.event_log:
            self.shard = ScaleOutProfile(self.engine, JetStreamSettings(
                servers=parse_servers(config.event_log), partitions=config.event_log_partitions,
                replicas=config.event_log_replicas), shard_index=config.shard_index, shard_count=config.shard_count)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = ProfileServicer(self.engine) if self.shard is None else ScaleOutServicer(self.shard)
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        await self.engine.start()
        if self.shard is not None:
            await self.shard.start()

    async def stop(self) -> None:
        if self.shard is not None:
            await self.shard.stop()
        await self.engine.stop()


def build_service(config: ProfileConfig) -> ProfileService:
    return ProfileService(config)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(ProfileConfig, SERVICE_NAME, argv, defaults={"port": DEFAULT_PORT},
                         description="Vitrine profile service: the single customer view on LMDB")
    run_service(config, build_service(config))
