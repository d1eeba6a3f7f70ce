"""The demo store's journeys: one of each kind, defined before the demo's events load so that
the journeys service (following the event log from its start) turns them into due messages; and
marketing consent for the demo's e-mail subscribers who are customers, set first too, since a
message goes only to a shopper who agreed to it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from services.common.channel import open_channel
from vitrine.demo.config import DemoConfig
from vitrine.demo.loader import shard_function
from vitrine.demo.sessions import HistoryGenerator
from vitrine.demo.shoppers import ShopperFactory
from vitrine.v1 import common_pb2, journey_pb2, journey_pb2_grpc, profile_pb2, profile_pb2_grpc, recommend_pb2

JK = journey_pb2.JourneyKind
S = recommend_pb2.Strategy
HOUR_MS = 3_600_000
# The demo runs at any hour: its journeys skip quiet hours (the service's default keeps them, 21-08).
ANY_HOUR = {"skip_quiet_hours": "true"}

DEMO_JOURNEYS: tuple[journey_pb2.Journey, ...] = (
    journey_pb2.Journey(journey_id="abandoned-cart", name="Your cart is waiting", kind=JK.ABANDONED_CART,
                        enabled=True, delay_ms=HOUR_MS, k=3, reentry_days=7, params=ANY_HOUR),
    journey_pb2.Journey(journey_id="browse-abandonment", name="Still thinking about it?",
                        kind=JK.BROWSE_ABANDONMENT, enabled=True, delay_ms=2 * HOUR_MS, k=3, reentry_days=7,
                        params=ANY_HOUR),
    journey_pb2.Journey(journey_id="post-purchase", name="Thank you, and what goes with it", kind=JK.POST_PURCHASE,
                        enabled=True, delay_ms=24 * HOUR_MS, strategy=S.BOUGHT_TOGETHER, k=4,
                        params={**ANY_HOUR, "skip_frequency_cap": "true"}),
    journey_pb2.Journey(journey_id="welcome", name="Welcome", kind=JK.WELCOME, enabled=True, delay_ms=0, k=4,
                        params={**ANY_HOUR, "skip_frequency_cap": "true"}),
    journey_pb2.Journey(journey_id="win-back", name="We miss you", kind=JK.WIN_BACK, enabled=True, delay_ms=0,
                        k=4, reentry_days=90, params={**ANY_HOUR, "days": "60"}),
    journey_pb2.Journey(journey_id="back-in-stock", name="It is back", kind=JK.BACK_IN_STOCK, enabled=True,
                        delay_ms=0, k=2, params=ANY_HOUR),
    journey_pb2.Journey(journey_id="price-drop", name="The price dropped", kind=JK.PRICE_DROP, enabled=True,
                        delay_ms=0, k=2, params={**ANY_HOUR, "min_drop": "0.1"}),
    journey_pb2.Journey(journey_id="engaged-no-purchase", name="Picked for you", kind=JK.ENGAGED_NO_PURCHASE,
                        enabled=True, delay_ms=HOUR_MS, k=4, reentry_days=30, params=ANY_HOUR),
)


async def put_demo_journeys(address: str, auth_token: str = "", deadline_seconds: float = 10.0) -> int:
    """Define the demo journeys on the journeys service at `address`; returns how many."""
    async with open_channel(address, auth_token=auth_token) as channel:
        stub = journey_pb2_grpc.JourneyServiceStub(channel)
        for journey in DEMO_JOURNEYS:
            await stub.PutJourney(journey_pb2.PutJourneyRequest(journey=journey), timeout=deadline_seconds,
                                  wait_for_ready=True)
    return len(DEMO_JOURNEYS)


def subscribers(config: DemoConfig) -> list[str]:
    """Customer ids of the demo's e-mail subscribers (the same seeded shoppers the loader makes)."""
    generator = HistoryGenerator(config)
    cfg = generator.config
    factory = ShopperFactory(cfg, generator.catalog)
    out: list[str] = []
    for chunk in range(math.ceil(cfg.n_shoppers / cfg.chunk_size)):
        out.extend(s.customer_id for s in factory.chunk(chunk) if s.email_subscriber and s.customer_id)
    return out


async def consent_subscribers(config: DemoConfig, profile_addresses: Sequence[str], auth_token: str = "",
                              deadline_seconds: float = 10.0, concurrency: int = 64) -> int:
    """Marketing (and personalization) consent for every demo subscriber; returns how many."""
    users = subscribers(config)
    shard_of = shard_function(len(profile_addresses)) or (lambda _user: 0)
    channels = [open_channel(a, auth_token=auth_token) for a in profile_addresses]
    stubs = [profile_pb2_grpc.ProfileServiceStub(c) for c in channels]
    limit = asyncio.Semaphore(concurrency)
    consent = common_pb2.Consent(personalization=True, marketing=True)

    async def one(user: str) -> None:
        async with limit:
            await stubs[shard_of(user)].SetConsent(profile_pb2.SetConsentRequest(user_id=user, consent=consent),
                                                   timeout=deadline_seconds, wait_for_ready=True)
    try:
        await asyncio.gather(*(one(u) for u in users))
    finally:
        for channel in channels:
            await channel.close()
    return len(users)
