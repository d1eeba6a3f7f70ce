"""Real in-process servers for the journeys tests: profile, recommendation (and segmentation where a
test needs it) on port 0, and the journeys service following their feeds with a controllable clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from services.journeys.app import JourneysService
from services.journeys.config import JourneysConfig
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from services.recommendation.app import build_service as build_recommendation
from services.recommendation.config import RecommendationConfig
from tests.support import serving
from vitrine.v1 import (
    common_pb2,
    journey_pb2,
    journey_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
)

WAIT = 15.0   # seconds any expected condition may take (a bound, not a sleep)
ET = common_pb2.EventType


class ManualClock:
    """The journeys service's clock: the wall clock (events are tracked at wall time) plus the time
    a test moved it forward."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset

    def advance(self, ms: int) -> None:
        self.offset += ms


def catalog() -> list[common_pb2.Product]:
    products = [common_pb2.Product(product_id=f"p{i}", title=f"Product {i}", category="shoes" if i < 10 else "bags",
                                   price=10.0 + i, stock=5, currency="EUR") for i in range(20)]
    products.append(common_pb2.Product(product_id="gone", title="Sold out", category="shoes", price=30.0, stock=0))
    return products


def recommendation_config(data_dir: Path, profile_address: str) -> RecommendationConfig:
    values: dict[str, object] = {"port": 0, "data_dir": str(data_dir), "snapshot_seconds": 0.0,
                                 "profile_addresses": profile_address}
    names = {f.name for f in dataclasses.fields(RecommendationConfig)}
    values = {k: v for k, v in values.items() if k in names}
    return RecommendationConfig(**values)  # type: ignore[arg-type]


def journeys_config(data_dir: Path, profile: str, recommendation: str, **overrides: object) -> JourneysConfig:
    values: dict[str, object] = {
        "port": 0, "data_dir": str(data_dir), "profile_addresses": profile, "recommendation_address": recommendation,
        "segmentation_address": "", "quiet_start_hour": 0, "quiet_end_hour": 0, "sync": True}
    values.update(overrides)
    return JourneysConfig(**values)  # type: ignore[arg-type]


@dataclasses.dataclass
class Suite:
    profiles: profile_pb2_grpc.ProfileServiceStub
    catalog: recommend_pb2_grpc.RecommendServiceStub
    journeys: journey_pb2_grpc.JourneyServiceStub
    service: JourneysService
    clock: ManualClock
    data_dir: Path
    profile_address: str
    recommendation_address: str

    async def track(self, kind: int, user: str = "c1", t: int | None = None, **fields: object) -> int:
        """Track an event and wait until the journeys service has applied it; returns its seq."""
        values: dict[str, object] = {"session_id": "s1"}
        if kind == ET.PURCHASE:
            values.update(price=10.0, order_id="o1")
        values.update(fields)
        event = common_pb2.Event(event_id=f"{user}-{time.monotonic_ns()}", user_id=user, type=kind,  # type: ignore[arg-type]
                                 timestamp_ms=int(time.time() * 1000) if t is None else t, **values)  # type: ignore[arg-type]
        response = await self.profiles.Track(profile_pb2.TrackRequest(event=event), timeout=10)
        await self.caught_up(response.seq)
        return response.seq

    async def caught_up(self, seq: int, seconds: float = WAIT) -> None:
        assert self.service.feeds is not None
        follower = self.service.feeds.event_followers[0]
        await asyncio.wait_for(follower.wait_for_cursor(seq + 1), seconds)

    async def customer(self, user: str = "c1", *, marketing: bool = True, **traits: str) -> None:
        """A registered customer with (or without) marketing consent."""
        profile = await self.profiles.Identify(profile_pb2.IdentifyRequest(
            anonymous_id=f"anon-{user}", customer_id=user, traits=traits), timeout=10)
        await self.profiles.SetConsent(profile_pb2.SetConsentRequest(
            user_id=user, consent=common_pb2.Consent(personalization=True, marketing=marketing)), timeout=10)
        assert profile.user_id == user
        await self.sync_events()

    async def sync_events(self, seconds: float = WAIT) -> None:
        """Wait until the journeys service has applied everything in the profile log so far."""
        probe = await self.profiles.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
            event_id=f"probe-{time.monotonic_ns()}", user_id="probe", type=ET.PAGE_VIEW,
            timestamp_ms=int(time.time() * 1000))), timeout=10)
        await self.caught_up(probe.seq, seconds)

    async def stock(self, product_id: str, stock: int, price: float | None = None) -> None:
        """Change a product's stock (and price) and wait until the catalog feed brought it here."""
        update = recommend_pb2.StockUpdate(product_id=product_id, stock=stock)
        if price is not None:
            update.price = price
        before = self.service.engine.catalog_cursor()
        await self.catalog.UpdateInventory(iter([update]), timeout=10)
        await self.catalog_moved(before)

    async def catalog_moved(self, before: int) -> None:
        assert self.service.feeds is not None
        await asyncio.wait_for(self.service.feeds.catalog_follower.wait_for_cursor(before + 1), WAIT)

    async def put(self, journey: journey_pb2.Journey) -> journey_pb2.Journey:
        return await self.journeys.PutJourney(journey_pb2.PutJourneyRequest(journey=journey), timeout=10)

    async def advance(self, ms: int) -> None:
        """Move the journeys clock and let the timer loop handle what fell due."""
        self.clock.advance(ms)
        engine = self.service.engine
        while await engine.run_due():
            pass
        engine.poke()

    async def pull(self, max_messages: int = 100, wait_ms: int = 0) -> list[journey_pb2.Message]:
        response = await self.journeys.PullMessages(
            journey_pb2.PullMessagesRequest(max=max_messages, wait_ms=wait_ms), timeout=WAIT + 5)
        return list(response.messages)

    async def stats(self, journey_id: str) -> journey_pb2.JourneyStats:
        return await self.journeys.GetJourneyStats(journey_pb2.GetJourneyStatsRequest(journey_id=journey_id),
                                                   timeout=10)


@contextlib.asynccontextmanager
async def backends(tmp_path: Path) -> AsyncIterator[tuple[str, str, profile_pb2_grpc.ProfileServiceStub,
                                                          recommend_pb2_grpc.RecommendServiceStub]]:
    profile = ProfileService(ProfileConfig(port=0, data_dir=str(tmp_path / "p"), purge_interval_seconds=0.0,
                                           writer_process=False))
    async with serving(profile, profile.config) as p_running:
        address = p_running.address
        recommendation = build_recommendation(recommendation_config(tmp_path / "r", address))
        async with serving(recommendation, recommendation.config) as r_running, \
                grpc.aio.insecure_channel(p_running.address) as p_channel, \
                grpc.aio.insecure_channel(r_running.address) as r_channel:
            catalog_stub = recommend_pb2_grpc.RecommendServiceStub(r_channel)
            summary = await catalog_stub.UpsertProducts(iter(catalog()), timeout=10)
            assert summary.rejected == 0
            global CATALOG_LAST_SEQ
            CATALOG_LAST_SEQ = await last_catalog_seq(catalog_stub, len(catalog()))
            yield address, r_running.address, profile_pb2_grpc.ProfileServiceStub(p_channel), catalog_stub


@contextlib.asynccontextmanager
async def journeys_running(data_dir: Path, profile: str, recommendation: str, clock: ManualClock,
                           **overrides: object) -> AsyncIterator[tuple[JourneysService, grpc.aio.Channel]]:
    service = JourneysService(journeys_config(data_dir, profile, recommendation, **overrides), clock=clock)
    async with serving(service, service.config) as running, \
            grpc.aio.insecure_channel(running.address) as channel:
        yield service, channel


CATALOG_LAST_SEQ = 0


async def last_catalog_seq(stub: recommend_pb2_grpc.RecommendServiceStub, n: int) -> int:
    """The seq of the n-th catalog change (the feed read from the start)."""
    call = stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=0))
    try:
        seq = 0
        for _ in range(n):
            seq = (await asyncio.wait_for(call.read(), WAIT)).seq
        return seq
    finally:
        call.cancel()


SuiteFactory = Callable[..., contextlib.AbstractAsyncContextManager[Suite]]


@pytest.fixture
def make_suite(tmp_path: Path) -> SuiteFactory:
    @contextlib.asynccontextmanager
    async def make(**overrides: object) -> AsyncIterator[Suite]:
        clock = ManualClock()
        async with backends(tmp_path) as (p_address, r_address, p_stub, r_stub), \
                journeys_running(tmp_path / "j", p_address, r_address, clock, **overrides) as (service, channel):
            suite = Suite(p_stub, r_stub, journey_pb2_grpc.JourneyServiceStub(channel), service, clock,
                          tmp_path / "j", p_address, r_address)
            # The catalog upserted before the journeys service started reaches it first.
            await suite.catalog_moved(CATALOG_LAST_SEQ)
            yield suite
    return make


@pytest.fixture
async def suite(make_suite: SuiteFactory) -> AsyncIterator[Suite]:
    async with make_suite() as s:
        yield s
