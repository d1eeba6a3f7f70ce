"""The real services in-process (one profile shard, segmentation, recommendation, journeys, gateway)
with a small demo store, run on an event loop in a background thread, so that synchronous
clients (Starlette's TestClient, Playwright's sync API) can drive the console against them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("OMP_NUM_THREADS", "1")

from services.common.server import RunningServer, build_server
from services.console.config import ConsoleConfig

T = TypeVar("T")

DEMO_PRODUCTS = 300
DEMO_SHOPPERS = 120
START_TIMEOUT_S = 600.0  # cold Numba compiles on a shared 2-core machine


def unused_address() -> str:
    """An address nothing listens on (bound once, then released): a backend that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class LoopThread:
    """An asyncio loop running in a daemon thread; `run` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-test-backends", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclasses.dataclass
class Backends:
    root: Path
    profile: RunningServer
    segmentation: RunningServer
    recommendation: RunningServer
    journeys: RunningServer
    gateway: RunningServer
    now_ms: int

    def console_config(self, **overrides: Any) -> ConsoleConfig:
        settings: dict[str, Any] = {
            "port": 0, "data_dir": str(self.root / "console-data"), "password": "s3cret-pass",
            "gateway_address": self.gateway.address, "segmentation_address": self.segmentation.address,
            "recommendation_address": self.recommendation.address, "journeys_address": self.journeys.address,
            "session_secret": "test-secret",
        }
        settings.update(overrides)
        return ConsoleConfig(**settings)

    async def close(self) -> None:
        await self.gateway.stop(0)
        for running in (self.journeys, self.segmentation, self.recommendation, self.profile):
            await running.stop(0)


async def start_backends(root: Path) -> Backends:
    from services.gateway.app import GatewayService
    from services.gateway.config import GatewayConfig
    from services.journeys.app import build_service as build_journeys
    from services.journeys.config import JourneysConfig
    from services.profile.app import build_service as build_profile
    from services.profile.config import ProfileConfig
    from services.recommendation.app import build_service as build_recommendation
    from services.recommendation.config import RecommendationConfig
    from services.segmentation.app import build_service as build_segmentation
    from services.segmentation.config import SegmentationConfig
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.journeys import put_demo_journeys
    from vitrine.demo.loader import load_demo

    profile_config = ProfileConfig(port=0, data_dir=str(root / "profile"), purge_interval_seconds=0)
    profile = await build_server(profile_config, build_profile(profile_config))
    seg_config = SegmentationConfig(port=0, data_dir=str(root / "seg"), profile_addresses=profile.address)
    segmentation = await build_server(seg_config, build_segmentation(seg_config))
    reco_config = RecommendationConfig(port=0, data_dir=str(root / "reco"), snapshot_seconds=0,
                                       profile_addresses=profile.address)
    recommendation = await build_server(reco_config, build_recommendation(reco_config))
    gateway_config = GatewayConfig(port=0, profile_addresses=profile.address,
                                   segmentation_address=segmentation.address,
                                   recommendation_address=recommendation.address, deadline_ms=500)
    gateway = await build_server(gateway_config, GatewayService(gateway_config))
    # Journeys follow the event log from its start: defined before the demo's events, as vitrine up does.
    journeys_config = JourneysConfig(port=0, data_dir=str(root / "journeys"), profile_addresses=profile.address,
                                     recommendation_address=recommendation.address,
                                     segmentation_address=segmentation.address, quiet_start_hour=0, quiet_end_hour=0)
    journeys = await build_server(journeys_config, build_journeys(journeys_config))
    await put_demo_journeys(journeys.address)
    report = await load_demo(
        DemoConfig(n_products=DEMO_PRODUCTS, n_shoppers=DEMO_SHOPPERS, seed=7),
        profile_addresses=[profile.address], gateway_address=gateway.address,
        segmentation_address=segmentation.address, recommendation_address=recommendation.address,
        progress=False)
    assert not report.errors, report.errors[:5]
    return Backends(root, profile, segmentation, recommendation, journeys, gateway, report.now_ms)
