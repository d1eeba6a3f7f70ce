"""Build and run the segmentation service (`python -m services.segmentation`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc

from services.common.config import load_config
from services.common.server import run_service
from services.segmentation.config import DEFAULT_PORT, FOLLOW_BATCH_ITEMS, SegmentationConfig
from services.segmentation.engine import SegmentEngine
from services.segmentation.feed import ResultsFeed
from services.segmentation.fields import warm_up
from services.segmentation.results import ExperimentResults
from services.segmentation.scan import ProfileScanner
from services.segmentation.servicer import SegmentServicer
from services.segmentation.store import DefinitionStore
from vitrine.v1 import segment_pb2, segment_pb2_grpc

SERVICE_NAME = segment_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name


class SegmentationService:
    name = "segmentation"
    service_names = (SERVICE_NAME,)

    def __init__(self, config: SegmentationConfig) -> None:
        self.config = config
        self.engine: SegmentEngine | None = None
        self.scanner: ProfileScanner | None = None
        self.results: ExperimentResults | None = None
        self.feed: ResultsFeed | None = None
        self._servicer: SegmentServicer | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self._servicer = SegmentServicer(_NotStarted(), None, self.config.scan_timeout_seconds)  # type: ignore[arg-type]
        segment_pb2_grpc.add_SegmentServiceServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        config = self.config
        store = DefinitionStore(Path(config.data_dir) / "segmentation")
        engine = SegmentEngine(store, cart_abandon_minutes=config.cart_abandon_minutes,
                               at_risk_quiet_days=config.at_risk_quiet_days, wire_reader=config.wire_reader)
        await engine.open()
        engine.evaluate(None, None)  # warm-up: every built-in rule runs once
        warm_up()
        self.engine = engine
        results = ExperimentResults(Path(config.data_dir) / "segmentation" / "results", lambda: engine.experiments)
        self.results = results

        async def forget(experiment_id: str) -> None:
            await asyncio.to_thread(results.forget, experiment_id)

        engine.experiment_deleted.append(forget)
        targets = config.profile_targets
        self.scanner = ProfileScanner(targets, config) if targets else None
        if targets and config.follow_events:
            self.feed = ResultsFeed(results, targets, config, FOLLOW_BATCH_ITEMS)
            self.feed.start()
        assert self._servicer is not None
        self._servicer.engine = engine
        self._servicer.scanner = self.scanner
        self._servicer.results = results

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self.scanner is not None:
            await self.scanner.close()
        if self.results is not None:
            self.results.close()
        if self.engine is not None:
            self.engine.close()


class _NotStarted:
    """Placeholder until start(); the readiness gate refuses calls before then."""


def build_service(config: SegmentationConfig) -> SegmentationService:
    return SegmentationService(config)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(SegmentationConfig, "segmentation", argv, defaults={"port": DEFAULT_PORT})
    run_service(config, build_service(config))
