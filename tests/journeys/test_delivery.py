"""Attribution, erasure, quiet hours, webhook delivery and restarts, through real servers."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import http.server
import json
import threading
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.journeys.config import SIGNATURE_HEADER
from services.journeys.store import DBS
from tests.journeys.conftest import ET, WAIT, ManualClock, Suite, SuiteFactory, backends, journeys_running
from tests.journeys.helpers import DAY_MS, HOUR_MS, JK, MIN_MS, journey
from vitrine.v1 import common_pb2, journey_pb2, journey_pb2_grpc, profile_pb2


async def test_opens_clicks_and_purchases_are_attributed(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
    await suite.customer("c1")
    await suite.track(ET.ADD_TO_CART, product_id="p1")
    await suite.advance(1000)
    [message] = await suite.pull(wait_ms=3000)
    mid = message.message_id
    await suite.track(ET.EMAIL_OPEN, campaign_id=mid)
    await suite.track(ET.EMAIL_OPEN, campaign_id=mid)                 # counted once per message
    await suite.track(ET.EMAIL_CLICK, context=common_pb2.Context(utm=common_pb2.Utm(campaign=mid)))
    await suite.track(ET.PURCHASE, product_id="p1", price=20.0, quantity=2, order_id="o5",
                      context=common_pb2.Context(utm=common_pb2.Utm(content=mid)))
    await suite.track(ET.PURCHASE, product_id="p2", price=5.0, order_id="o5")   # no id: last clicked message
    await suite.track(ET.EMAIL_OPEN, campaign_id="m_unknown")
    stats = await suite.stats("cart")
    assert (stats.opened, stats.clicked, stats.converted) == (1, 1, 1)
    assert stats.revenue == pytest.approx(45.0)


async def test_attribution_window(make_suite: SuiteFactory) -> None:
    async with make_suite(attribution_days=1.0) as suite:
        await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
        await suite.customer("c1")
        await suite.track(ET.ADD_TO_CART, product_id="p1")
        await suite.advance(1000)
        [message] = await suite.pull(wait_ms=3000)
        # An open two days after the send (as the events' time sees it) is outside a 1-day window.
        with suite.service.store.write() as txn:
            delivery = suite.service.store.delivery(txn, message.message_id)
            assert delivery is not None
            delivery.created_ms -= 2 * DAY_MS
            suite.service.store.put_delivery(txn, message.message_id, delivery)
        await suite.track(ET.EMAIL_OPEN, campaign_id=message.message_id)
        assert (await suite.stats("cart")).opened == 0


def lmdb_mentions(suite: Suite, needle: bytes) -> list[tuple[str, bytes]]:
    store = suite.service.store
    found = []
    with store.read() as txn:
        for name in DBS:
            for key, value in txn.cursor(db=store.db[name]):
                if needle in bytes(key) or needle in bytes(value):
                    found.append((name, bytes(key)))
    return found


async def test_erasure_reaches_the_journey_store(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
    await suite.put(journey(JK.WIN_BACK, "winback", delay_ms=0))
    await suite.put(journey(JK.BACK_IN_STOCK, "bis", delay_ms=0))
    await suite.customer("shopper-e")
    await suite.customer("shopper-f")
    await suite.track(ET.ADD_TO_CART, user="shopper-e", product_id="p1")
    await suite.track(ET.PURCHASE, user="shopper-e", product_id="p3")      # a pending win-back timer
    await suite.track(ET.PRODUCT_VIEW, user="shopper-e", product_id="gone")  # a watch
    await suite.track(ET.ADD_TO_CART, user="shopper-f", product_id="p1")
    await suite.advance(1000)
    messages = await suite.pull(wait_ms=3000)
    assert {m.user_id for m in messages} == {"shopper-e", "shopper-f"}
    assert lmdb_mentions(suite, b"shopper-e")
    await suite.profiles.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id="shopper-e"), timeout=10)
    await suite.sync_events()
    assert lmdb_mentions(suite, b"shopper-e") == []
    assert lmdb_mentions(suite, b"shopper-f")                               # the other shopper is kept
    assert (await suite.stats("winback")).pending == 0                     # its timer went with it
    listed = await suite.journeys.ListUserMessages(journey_pb2.ListUserMessagesRequest(user_id="shopper-e"))
    assert not listed.messages
    await suite.advance(61_000)
    assert {m.user_id for m in await suite.pull(wait_ms=3000)} == {"shopper-f"}   # only f's is redelivered


def zone_where_it_is(hour: int, at_ms: int) -> str:
    """An Etc/GMT zone in which the local hour at `at_ms` is `hour`."""
    utc_hour = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC).hour
    offset = (hour - utc_hour) % 24
    if offset > 12:
        offset -= 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def test_quiet_hours_delay_the_message(make_suite: SuiteFactory) -> None:
    async with make_suite(quiet_start_hour=21, quiet_end_hour=8) as suite:
        await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
        tz = zone_where_it_is(23, suite.clock() + MIN_MS)
        await suite.customer("c1", timezone=tz)
        await suite.track(ET.ADD_TO_CART, product_id="p1")
        await suite.advance(MIN_MS)
        assert await suite.pull() == []                       # 23:xx local: waits, not dropped
        stats = await suite.stats("cart")
        assert (stats.pending, stats.sent, stats.suppressed) == (1, 0, 0)
        await suite.advance(10 * HOUR_MS)                     # past 08:00 local
        [message] = await suite.pull(wait_ms=3000)
        local = datetime.datetime.fromtimestamp(message.created_ms / 1000, zoneinfo.ZoneInfo(tz))
        assert 8 <= local.hour < 21


class Receiver:
    """A real local HTTP server: answers the first `failures` POSTs with 500, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.posts: list[tuple[bytes, str]] = []
        self.accepted = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((body, self.headers.get(SIGNATURE_HEADER, "")))
                ok = len(receiver.posts) > receiver.failures
                self.send_response(200 if ok else 500)
                self.end_headers()
                if ok:
                    receiver.accepted.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    yield r
    r.close()


async def test_webhook_retries_until_accepted(make_suite: SuiteFactory, receiver: Receiver) -> None:
    async with make_suite(webhook_url=receiver.url, webhook_secret="s3cret") as suite:
        await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
        await suite.customer("c1")
        await suite.track(ET.ADD_TO_CART, product_id="p1")
        await suite.advance(1000)
        # Two failures: each retry waits its backoff (1 s, 2 s on the service's clock).
        for _ in range(40):
            if receiver.accepted.is_set():
                break
            await asyncio.to_thread(receiver.accepted.wait, 0.25)
            await suite.advance(1000)
        assert receiver.accepted.is_set()
        assert len(receiver.posts) == 3
        bodies = [json.loads(body) for body, _ in receiver.posts]
        assert len({b["message_id"] for b in bodies}) == 1
        assert [b["delivery_attempt"] for b in bodies] == [1, 2, 3]
        body, signature = receiver.posts[-1]
        assert signature == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert suite.service.webhook is not None
        await asyncio.wait_for(suite.service.webhook.wait_acked(1), WAIT)   # the ack follows the 200
        assert (await suite.stats("cart")).delivered == 1
        await suite.advance(HOUR_MS)
        assert await suite.pull() == []                      # acked: never delivered again


async def test_restart_resumes_the_feeds_and_keeps_timers(tmp_path: Path) -> None:
    clock = ManualClock()
    data = tmp_path / "j"
    async with backends(tmp_path) as (p_address, r_address, profiles, _catalog):
        async with journeys_running(data, p_address, r_address, clock) as (service, channel):
            stub = journey_pb2_grpc.JourneyServiceStub(channel)
            await stub.PutJourney(journey_pb2.PutJourneyRequest(journey=journey(JK.ABANDONED_CART, "cart",
                                                                                delay_ms=HOUR_MS)))
            await profiles.Identify(profile_pb2.IdentifyRequest(anonymous_id="a", customer_id="c1"))
            await profiles.SetConsent(profile_pb2.SetConsentRequest(
                user_id="c1", consent=common_pb2.Consent(marketing=True)))
            response = await profiles.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                event_id="e1", user_id="c1", session_id="s", type=ET.ADD_TO_CART, product_id="p1",
                timestamp_ms=clock())))
            assert service.feeds is not None
            await asyncio.wait_for(service.feeds.event_followers[0].wait_for_cursor(response.seq + 1), WAIT)
        # Down: more events arrive meanwhile.
        late = await profiles.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
            event_id="e2", user_id="c1", session_id="s", type=ET.ADD_TO_CART, product_id="p2",
            timestamp_ms=clock())))
        async with journeys_running(data, p_address, r_address, clock) as (service, channel):
            stub = journey_pb2_grpc.JourneyServiceStub(channel)
            assert service.feeds is not None
            await asyncio.wait_for(service.feeds.event_followers[0].wait_for_cursor(late.seq + 1), WAIT)
            stats = await stub.GetJourneyStats(journey_pb2.GetJourneyStatsRequest(journey_id="cart"))
            assert (stats.entered, stats.pending) == (1, 1)     # nothing applied twice
            clock.advance(HOUR_MS + MIN_MS)
            service.engine.poke()
            response = await stub.PullMessages(journey_pb2.PullMessagesRequest(wait_ms=5000))
            [message] = response.messages
            assert {i.product_id for i in message.items} >= {"p1", "p2"}


async def test_purge_of_delivered_messages_and_expired_watches(suite: Suite) -> None:
    await suite.put(journey(JK.ABANDONED_CART, "cart", delay_ms=0))
    await suite.put(journey(JK.PRICE_DROP, "drop", delay_ms=0, params={"watch_days": "2"}))
    await suite.customer("c1")
    await suite.customer("c2")
    await suite.track(ET.ADD_TO_CART, user="c1", product_id="p1")
    await suite.track(ET.ADD_TO_CART, user="c2", product_id="p2")
    await suite.advance(1000)
    messages = await suite.pull(wait_ms=3000)
    assert len(messages) == 2
    delivered = next(m for m in messages if m.user_id == "c1")
    await suite.journeys.AckMessages(journey_pb2.AckMessagesRequest(message_ids=[delivered.message_id]))
    store = suite.service.store
    with store.read() as txn:
        assert store.count(txn, "watches") == 2               # both carts watch their product's price
    await suite.advance(40 * DAY_MS)
    messages_purged, watches_purged = suite.service.engine.purge(30 * DAY_MS)
    assert (messages_purged, watches_purged) == (1, 2)       # the acked one; the unacked one is kept
    with store.read() as txn:
        assert store.message(txn, delivered.message_id) is None
        assert store.count(txn, "messages") == 1 and store.count(txn, "watches") == 0
    listed = await suite.journeys.ListUserMessages(journey_pb2.ListUserMessagesRequest(user_id="c1"))
    assert not listed.messages
