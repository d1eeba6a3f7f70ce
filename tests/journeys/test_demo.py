"""The demo store's journeys: valid definitions, and loading the demo (small) into real services
produces due messages."""

from __future__ import annotations

import time

from services.journeys.definitions import validate_journey
from tests.journeys.conftest import Suite
from vitrine.demo.config import DemoConfig
from vitrine.demo.journeys import DEMO_JOURNEYS, consent_subscribers, subscribers
from vitrine.demo.loader import load_demo
from vitrine.v1 import journey_pb2


def test_one_valid_journey_of_each_kind() -> None:
    for journey in DEMO_JOURNEYS:
        validate_journey(journey)
    kinds = {j.kind for j in DEMO_JOURNEYS}
    assert kinds == set(journey_pb2.JourneyKind.values()) - {journey_pb2.JOURNEY_KIND_UNSPECIFIED}


async def test_loading_the_demo_produces_due_messages(suite: Suite) -> None:
    config = DemoConfig(n_shoppers=300, n_products=100)
    for journey in DEMO_JOURNEYS:
        await suite.put(journey)
    consented = await consent_subscribers(config, [suite.profile_address])
    assert consented == len(subscribers(config)) > 0
    report = await load_demo(config, profile_addresses=[suite.profile_address], segmentation_address=None,
                             recommendation_address=suite.recommendation_address, progress=False, train=False,
                             observe=False)
    assert not report.errors
    started = time.monotonic()
    await suite.sync_events(seconds=180)
    print(f"caught up in {time.monotonic() - started:.1f} s")
    await suite.advance(0)
    messages = await suite.pull(max_messages=1000, wait_ms=5000)
    assert messages, "the demo produced no message"
    assert {m.user_id for m in messages} <= set(subscribers(config)) | {m.user_id for m in messages
                                                                         if m.customer_id}
    stats = [await suite.stats(j.journey_id) for j in DEMO_JOURNEYS]
    assert sum(s.entered for s in stats) > len(messages)
