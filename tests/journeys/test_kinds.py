"""Every journey kind end to end: events tracked on a real profile service, stock and prices changed
on a real recommendation service, messages pulled from the journeys service."""

from __future__ import annotations

from pathlib import Path

from services.segmentation.app import build_service as build_segmentation
from services.segmentation.config import SegmentationConfig
from tests.journeys.conftest import ET, Suite, SuiteFactory
from tests.journeys.helpers import DAY_MS, HOUR_MS, JK, MIN_MS, journey
from tests.support import channel_to, serving
from vitrine.ports import free_port
from vitrine.v1 import journey_pb2, segment_pb2, segment_pb2_grpc


async def due(suite: Suite, ms: int) -> list[journey_pb2.Message]:
    """Move the clock by `ms` and pull what fell due."""
    await suite.advance(ms)
    return await suite.pull(wait_ms=3000)


async def test_browse_abandonment_after_the_visit(suite: Suite) -> None:
    await suite.put(journey(JK.BROWSE_ABANDONMENT, "browse", delay_ms=HOUR_MS, k=2))
    await suite.customer("c1")
    await suite.track(ET.PRODUCT_VIEW, product_id="p1")
    await suite.track(ET.PRODUCT_VIEW, product_id="p2")
    await suite.advance(HOUR_MS)                       # the visit has not ended + the delay
    assert await suite.pull() == []
    [message] = await due(suite, 31 * MIN_MS)
    assert [i.product_id for i in message.items][:2] == ["p2", "p1"]
    assert message.kind == JK.BROWSE_ABANDONMENT


async def test_browse_abandonment_cancelled_by_add_to_cart(suite: Suite) -> None:
    await suite.put(journey(JK.BROWSE_ABANDONMENT, "browse"))
    await suite.customer("c1")
    await suite.track(ET.PRODUCT_VIEW, product_id="p1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    assert await due(suite, DAY_MS) == []
    assert (await suite.stats("browse")).cancelled == 1


async def test_post_purchase(suite: Suite) -> None:
    await suite.put(journey(JK.POST_PURCHASE, "thanks", delay_ms=DAY_MS))
    await suite.customer("c1")
    await suite.track(ET.PURCHASE, product_id="p1", order_id="o9")
    await suite.track(ET.PURCHASE, product_id="p2", order_id="o9")
    [message] = await due(suite, DAY_MS + 1)
    assert message.kind == JK.POST_PURCHASE and "p1" in message.reason and "p2" in message.reason
    assert not {"p1", "p2"} & {i.product_id for i in message.items}    # what goes with it, not it


async def test_welcome_once(suite: Suite) -> None:
    await suite.put(journey(JK.WELCOME, "welcome", delay_ms=10 * MIN_MS))
    await suite.customer("c1", first_name="Ada")
    [message] = await due(suite, 10 * MIN_MS + 1)
    assert message.kind == JK.WELCOME and message.traits["first_name"] == "Ada"
    await suite.journeys.AckMessages(journey_pb2.AckMessagesRequest(message_ids=[message.message_id]))
    await suite.customer("c1")                          # identifies again: no second welcome
    assert await due(suite, 2 * DAY_MS) == []
    assert (await suite.stats("welcome")).entered == 1


async def test_win_back(suite: Suite) -> None:
    await suite.put(journey(JK.WIN_BACK, "winback", delay_ms=0, params={"days": "30"}))
    await suite.customer("c1")
    await suite.track(ET.PURCHASE, product_id="p1")
    assert await due(suite, 29 * DAY_MS) == []
    [message] = await due(suite, DAY_MS + MIN_MS)
    assert message.kind == JK.WIN_BACK


async def test_back_in_stock(suite: Suite) -> None:
    await suite.put(journey(JK.BACK_IN_STOCK, "bis", delay_ms=0))
    await suite.customer("c1")
    await suite.track(ET.PRODUCT_VIEW, product_id="gone")
    assert await due(suite, MIN_MS) == []
    await suite.stock("gone", 3)
    [message] = await due(suite, MIN_MS)
    assert message.items[0].product_id == "gone" and message.items[0].stock == 3


async def test_back_in_stock_not_sent_when_sold_out_again(suite: Suite) -> None:
    await suite.put(journey(JK.BACK_IN_STOCK, "bis", delay_ms=HOUR_MS))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="gone")
    await suite.stock("gone", 3)
    await suite.stock("gone", 0)
    assert await due(suite, 2 * HOUR_MS) == []
    assert dict((await suite.stats("bis")).suppressed_by_reason) == {"out_of_stock": 1}


async def test_price_drop(suite: Suite) -> None:
    await suite.put(journey(JK.PRICE_DROP, "drop", delay_ms=0, params={"min_drop": "0.2"}))
    await suite.customer("c1")
    await suite.track(ET.PRODUCT_VIEW, product_id="p2")          # catalog price 12.0
    await suite.stock("p2", 5, price=11.0)                          # -8%: not enough
    assert await due(suite, MIN_MS) == []
    await suite.stock("p2", 5, price=9.0)                           # -25% of what the shopper saw
    [message] = await due(suite, MIN_MS)
    assert message.items[0].product_id == "p2" and message.items[0].price == 9.0


async def test_engaged_no_purchase(suite: Suite) -> None:
    await suite.put(journey(JK.ENGAGED_NO_PURCHASE, "engaged", delay_ms=HOUR_MS))
    await suite.customer("c1")
    for kind in (ET.EMAIL_OPEN, ET.EMAIL_CLICK, ET.EMAIL_OPEN):
        await suite.track(kind)
    [message] = await due(suite, HOUR_MS + 1)
    assert message.kind == JK.ENGAGED_NO_PURCHASE


async def test_out_of_stock_items_left_out(make_suite: SuiteFactory) -> None:
    async with make_suite(frequency_cap=0) as suite:
        await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=HOUR_MS))
        await suite.customer("c1")
        await suite.customer("c2")
        await suite.track(ET.ADD_TO_CART, product_id="p4")
        await suite.track(ET.ADD_TO_CART, product_id="p5")
        await suite.track(ET.ADD_TO_CART, user="c2", product_id="p6")
        await suite.stock("p5", 0)
        await suite.stock("p6", 0)
        [message] = await due(suite, HOUR_MS + 1)
        assert message.user_id == "c1"
        ids = [i.product_id for i in message.items]
        assert "p4" in ids and "p5" not in ids and "p6" not in ids
        stats = await suite.stats("cart")
        assert (stats.sent, dict(stats.suppressed_by_reason)) == (1, {"out_of_stock": 1})


async def test_frequency_cap_across_journeys_skips_for_good(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=HOUR_MS))
    await suite.put(journey(JK.POST_PURCHASE, "thanks", delay_ms=HOUR_MS))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    await suite.track(ET.PURCHASE, product_id="p2", order_id="o2")
    messages = await due(suite, HOUR_MS + 1)
    assert len(messages) == 1
    capped = "thanks" if messages[0].journey_id == "cart" else "cart"
    assert dict((await suite.stats(capped)).suppressed_by_reason) == {"frequency_cap": 1}
    # Skipped, not postponed: nothing comes after the cap window either.
    await suite.journeys.AckMessages(journey_pb2.AckMessagesRequest(message_ids=[messages[0].message_id]))
    assert await due(suite, 2 * DAY_MS) == []


async def test_reentry_window(make_suite: SuiteFactory) -> None:
    async with make_suite(frequency_cap=0) as suite:
        await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=HOUR_MS, reentry_days=7))
        await suite.customer("c1")
        await suite.track(ET.ADD_TO_CART, product_id="p1")
        assert len(await due(suite, HOUR_MS + 1)) == 1
        await suite.track(ET.ADD_TO_CART, product_id="p2")      # within 7 days of the last send
        stats = await suite.stats("cart")
        assert (stats.entered, dict(stats.suppressed_by_reason)) == (1, {"reentry": 1})


async def test_segment_filter_needs_segmentation(suite: Suite) -> None:
    """A journey with a segment filter waits (and is retried) while segmentation is unreachable."""
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0, segment_ids=["vip"]))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    assert await due(suite, MIN_MS) == []
    stats = await suite.stats("cart")
    assert (stats.pending, stats.sent, stats.suppressed) == (1, 0, 0)


async def test_segment_filter_and_offer_from_segmentation(make_suite: SuiteFactory, tmp_path: Path) -> None:
    seg_config = SegmentationConfig(port=0, data_dir=str(tmp_path / "seg"),  # type: ignore[call-arg]
                                    profile_addresses=f"127.0.0.1:{free_port()}")
    async with serving(build_segmentation(seg_config), seg_config) as seg, channel_to(seg) as channel:
        segments = segment_pb2_grpc.SegmentServiceStub(channel)
        await segments.PutSegment(segment_pb2.PutSegmentRequest(segment=segment_pb2.Segment(
            segment_id="gold", rule='traits["tier"] == "gold"')), timeout=10)
        await segments.PutOffer(segment_pb2.PutOfferRequest(offer=segment_pb2.Offer(
            offer_id="gold10", title="10% for gold members", coupon_code="GOLD10", segment_ids=["gold"])),
            timeout=10)
        async with make_suite(segmentation_address=seg.address) as suite:
            await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0, segment_ids=["gold"], offer_id="gold10"))
            await suite.customer("c1", tier="gold")
            await suite.customer("c2", tier="silver")
            await suite.track(ET.ADD_TO_CART, user="c1", product_id="p1")
            await suite.track(ET.ADD_TO_CART, user="c2", product_id="p1")
            [message] = await due(suite, MIN_MS)
            assert message.user_id == "c1"
            assert (message.offer.offer_id, message.offer.coupon_code) == ("gold10", "GOLD10")
            assert dict((await suite.stats("cart")).suppressed_by_reason) == {"not_in_segment": 1}
