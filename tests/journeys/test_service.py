"""JourneyService through real in-process servers: profile and recommendation feeds, the journeys
service on port 0 with a controllable clock."""

from __future__ import annotations

import grpc

from tests.journeys.conftest import ET, Suite, SuiteFactory
from tests.journeys.helpers import HOUR_MS, JK, MIN_MS, journey
from tests.support import assert_status
from vitrine.v1 import journey_pb2


async def test_abandoned_cart_from_track_to_pulled_message(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=HOUR_MS))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1", price=11.0)
    stats = await suite.stats("cart")
    assert (stats.entered, stats.pending, stats.sent) == (1, 1, 0)
    await suite.advance(HOUR_MS - MIN_MS)
    assert await suite.pull() == []                       # waiting: not due yet
    await suite.advance(2 * MIN_MS)
    [message] = await suite.pull(wait_ms=5000)
    assert (message.journey_id, message.kind, message.user_id, message.customer_id) == ("cart", JK.ABANDONED_CART,
                                                                                         "c1", "c1")
    assert message.items[0].product_id == "p1" and message.items[0].stock > 0
    assert message.delivery_attempt == 1 and message.channel == "email"
    stats = await suite.stats("cart")
    assert (stats.entered, stats.sent, stats.pending) == (1, 1, 0)
    # Not acked: delivered again after the visibility timeout, with the same id.
    assert await suite.pull() == []
    await suite.advance(61_000)
    [again] = await suite.pull(wait_ms=5000)
    assert again.message_id == message.message_id and again.delivery_attempt == 2
    ack = await suite.journeys.AckMessages(journey_pb2.AckMessagesRequest(message_ids=[message.message_id]))
    assert ack.acked == 1
    await suite.advance(61_000)
    assert await suite.pull() == []
    assert (await suite.stats("cart")).delivered == 1
    listed = await suite.journeys.ListUserMessages(journey_pb2.ListUserMessagesRequest(user_id="c1"))
    assert [m.message_id for m in listed.messages] == [message.message_id]


async def test_abandoned_cart_cancelled_by_purchase(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart"))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    await suite.track(ET.PURCHASE, product_id="p1")
    await suite.advance(2 * HOUR_MS)
    assert await suite.pull() == []
    stats = await suite.stats("cart")
    assert (stats.entered, stats.cancelled, stats.sent, stats.pending) == (1, 1, 0, 0)
    assert dict(stats.cancelled_by_reason) == {"purchased": 1}


async def test_consent_withdrawn_before_send_suppresses(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart"))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    await suite.customer("c1", marketing=False)
    await suite.advance(2 * HOUR_MS)
    assert await suite.pull() == []
    stats = await suite.stats("cart")
    assert stats.suppressed == 1 and dict(stats.suppressed_by_reason) == {"no_consent": 1}


async def test_bad_journeys_are_refused(suite: Suite) -> None:
    no_id = journey(JK.ABANDONED_CART, "x")
    no_id.journey_id = ""
    bad = [journey(JK.JOURNEY_KIND_UNSPECIFIED, "x"), no_id,
           journey(JK.ABANDONED_CART, "x", delay_ms=-1), journey(JK.PRICE_DROP, "x", params={"min_drop": "2"}),
           journey(JK.WIN_BACK, "x", params={"nope": "1"}), journey(JK.WIN_BACK, "x", params={"days": "many"})]
    for j in bad:
        err = await assert_status(suite.put(j), grpc.StatusCode.INVALID_ARGUMENT)
        assert err.details()
    assert not (await suite.journeys.ListJourneys(journey_pb2.ListJourneysRequest())).journeys
    await assert_status(suite.journeys.GetJourney(journey_pb2.GetJourneyRequest(journey_id="nope")),
                        grpc.StatusCode.NOT_FOUND)
    await assert_status(suite.journeys.PullMessages(journey_pb2.PullMessagesRequest(max=-1)),
                        grpc.StatusCode.INVALID_ARGUMENT)
    await assert_status(suite.stats("nope"), grpc.StatusCode.NOT_FOUND)


async def test_token_is_required_when_set(make_suite: SuiteFactory) -> None:
    async with make_suite(auth_token="s3cret") as suite:
        await assert_status(suite.journeys.ListJourneys(journey_pb2.ListJourneysRequest(), timeout=5),
                            grpc.StatusCode.UNAUTHENTICATED)
        listed = await suite.journeys.ListJourneys(journey_pb2.ListJourneysRequest(), timeout=5,
                                                   metadata=(("authorization", "Bearer s3cret"),))
        assert not listed.journeys
