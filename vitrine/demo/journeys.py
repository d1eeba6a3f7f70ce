"""The demo store's journeys: one of each kind, defined before the demo's events load so that
the journeys service (following the event log from its start) turns them into due messages."""

from __future__ import annotations

from services.common.channel import open_channel
from vitrine.v1 import journey_pb2, journey_pb2_grpc, recommend_pb2

JK = journey_pb2.JourneyKind
S = recommend_pb2.Strategy
HOUR_MS = 3_600_000

DEMO_JOURNEYS: tuple[journey_pb2.Journey, ...] = (
    journey_pb2.Journey(journey_id="abandoned-cart", name="Your cart is waiting", kind=JK.ABANDONED_CART,
                        enabled=True, delay_ms=HOUR_MS, k=3, reentry_days=7),
    journey_pb2.Journey(journey_id="browse-abandonment", name="Still thinking about it?",
                        kind=JK.BROWSE_ABANDONMENT, enabled=True, delay_ms=2 * HOUR_MS, k=3, reentry_days=7),
    journey_pb2.Journey(journey_id="post-purchase", name="Thank you, and what goes with it", kind=JK.POST_PURCHASE,
                        enabled=True, delay_ms=24 * HOUR_MS, strategy=S.BOUGHT_TOGETHER, k=4,
                        params={"skip_frequency_cap": "true"}),
    journey_pb2.Journey(journey_id="welcome", name="Welcome", kind=JK.WELCOME, enabled=True, delay_ms=0, k=4,
                        params={"skip_frequency_cap": "true"}),
    journey_pb2.Journey(journey_id="win-back", name="We miss you", kind=JK.WIN_BACK, enabled=True, delay_ms=0,
                        k=4, reentry_days=90, params={"days": "60"}),
    journey_pb2.Journey(journey_id="back-in-stock", name="It is back", kind=JK.BACK_IN_STOCK, enabled=True,
                        delay_ms=0, k=2),
    journey_pb2.Journey(journey_id="price-drop", name="The price dropped", kind=JK.PRICE_DROP, enabled=True,
                        delay_ms=0, k=2, params={"min_drop": "0.1"}),
    journey_pb2.Journey(journey_id="engaged-no-purchase", name="Picked for you", kind=JK.ENGAGED_NO_PURCHASE,
                        enabled=True, delay_ms=HOUR_MS, k=4, reentry_days=30),
)


async def put_demo_journeys(address: str, auth_token: str = "", deadline_seconds: float = 10.0) -> int:
    """Define the demo journeys on the journeys service at `address`; returns how many."""
    async with open_channel(address, auth_token=auth_token) as channel:
        stub = journey_pb2_grpc.JourneyServiceStub(channel)
        for journey in DEMO_JOURNEYS:
            await stub.PutJourney(journey_pb2.PutJourneyRequest(journey=journey), timeout=deadline_seconds,
                                  wait_for_ready=True)
    return len(DEMO_JOURNEYS)
