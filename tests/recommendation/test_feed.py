"""The real-time signals follow the event log: EventSignals fed with LoggedEvent objects directly, then
through a real profile server's FollowEvents (live, a restart, a crash after a checkpoint, erasure)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import lmdb
import numpy as np
import pytest

from services.profile.app import build_service as build_profile
from services.profile.config import ProfileConfig
from services.recommendation.app import build_service
from services.recommendation.catalog import Catalog
from services.recommendation.config import RecommendationConfig
from services.recommendation.engine import Query
from services.recommendation.feed import EventSignals, ObserveResult
from services.recommendation.service import RecommendationService
from services.recommendation.signals import Signals
from services.recommendation.store import SignalStore
from tests.recommendation.conftest import config_for
from tests.support import serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc, recommend_pb2, recommend_pb2_grpc

WAIT = 30.0
HALF_LIFE_MS = 24 * 3_600_000
NOW_MS = 1_780_000_000_000
VIEW, CART, BUY = common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART, common_pb2.PURCHASE


def products(n: int = 6) -> list[common_pb2.Product]:
    return [common_pb2.Product(product_id=f"p{i}", category="c" if i % 2 else "d", price=5.0, stock=3)
            for i in range(n)]


def event(kind: int, pid: str, user: str = "u1", *, eid: str, session: str = "s1", order: str = "",
          t: int = NOW_MS) -> common_pb2.Event:
    return common_pb2.Event(event_id=eid, user_id=user, session_id=session, type=kind, product_id=pid,
                            order_id=order, price=5.0, quantity=1, timestamp_ms=t)


def logged(seq: int, e: common_pb2.Event, *, canonical: str = "", off: bool = False) -> profile_pb2.LoggedEvent:
    return profile_pb2.LoggedEvent(seq=seq, event=e, canonical_user_id=canonical or e.user_id,
                                   personalization_off=off)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(tmp_path)
    cat.open()
    cat.apply(products())
    yield cat
    cat.close()


def fresh(catalog: Catalog) -> EventSignals:
    return EventSignals(catalog, Signals(HALF_LIFE_MS))


def trending(es: EventSignals, pid: str) -> float:
    row = es.catalog.row_of[pid]
    items = es.signals.trending.items
    return float(items[row]) if row < items.size else 0.0


def together(es: EventSignals, pid: str) -> list[str]:
    rows, _ = es.signals.together.top([es.catalog.row_of[pid]], 10)
    return sorted(es.catalog.ids[r] for r in rows.tolist())


# -- EventSignals, fed directly -------------------------------------------------------------------
def test_feed_events_count_and_move_the_cursor(catalog: Catalog) -> None:
    es = fresh(catalog)
    batch = es.apply("0", [
        logged(1, event(VIEW, "p1", eid="e1")),
        logged(2, event(CART, "p1", eid="e2")),
        logged(3, event(CART, "p2", eid="e3")),
        logged(4, event(VIEW, "nope", eid="e4")),                   # not in the catalog: no signal
        logged(5, event(VIEW, "p3", eid="e5"), off=True),           # no personalization consent: left out
        logged(6, event(BUY, "p4", eid="e6", order="o1")),
        logged(7, event(BUY, "p5", eid="e7", order="o1")),
    ])
    assert (batch.observed, batch.ignored) == (5, 2)
    assert es.cursors == {"0": 8}
    assert trending(es, "p1") > 0 and trending(es, "p3") == 0
    assert together(es, "p1") == ["p2"] and together(es, "p4") == ["p5"]


def test_an_event_from_observe_and_from_the_feed_counts_once(catalog: Catalog) -> None:
    es = fresh(catalog)
    e = event(VIEW, "p1", eid="same")
    result = ObserveResult()
    es.observe([e, event(VIEW, "", eid="bad")], result)
    assert (result.observed, result.rejected) == (1, 1) and "needs product_id" in result.errors[0]
    once = trending(es, "p1")
    assert es.apply("0", [logged(1, e)]).ignored == 1
    assert trending(es, "p1") == once


def test_a_login_carries_the_open_cart_to_the_customer(catalog: Catalog) -> None:
    es = fresh(catalog)
    es.apply("0", [
        logged(1, event(CART, "p1", "anon", eid="e1")),
        profile_pb2.LoggedEvent(seq=2, identity=profile_pb2.Identity(anonymous_id="anon", customer_id="c1"),
                                canonical_user_id="c1"),
        logged(3, event(CART, "p2", "anon", eid="e2"), canonical="c1"),
    ])
    assert together(es, "p1") == ["p2"]
    assert es.signals.basket_users() == {"c1"}


def test_an_erasure_drops_the_shoppers_baskets(catalog: Catalog) -> None:
    es = fresh(catalog)
    es.apply("0", [logged(1, event(CART, "p1", "c1", eid="e1")), logged(2, event(CART, "p1", "anon", eid="e2")),
                   logged(3, event(BUY, "p2", "other", eid="e3", order="o"))])
    batch = es.apply("0", [profile_pb2.LoggedEvent(
        seq=4, erasure=profile_pb2.Erasure(user_id="c1", aliases=["anon"]), canonical_user_id="c1")])
    assert batch.erasures == 1 and es.signals.basket_users() == {"other"}
    # a later cart of the same id starts a new basket: nothing pairs with what was erased
    es.apply("0", [logged(5, event(CART, "p3", "c1", eid="e5"))])
    assert together(es, "p3") == []


def test_a_snapshot_keeps_counts_pairs_baskets_and_event_ids(catalog: Catalog) -> None:
    es = fresh(catalog)
    es.apply("0", [logged(1, event(CART, "p1", eid="e1")), logged(2, event(CART, "p2", eid="e2")),
                   logged(3, event(BUY, "p4", eid="e3", order="o1"))])
    ids = list(catalog.ids)
    blob = Signals.encode(es.signals.snapshot(ids), ids)
    back = fresh(catalog)
    back.signals.restore(blob, catalog.row_of)
    np.testing.assert_allclose(back.signals.trending.items[:len(ids)], es.signals.trending.items[:len(ids)])
    assert together(back, "p1") == ["p2"] and back.signals.basket_users() == {"u1"}
    back.apply("0", [logged(4, event(CART, "p3", eid="e4")), logged(5, event(CART, "p1", eid="e1"))])
    assert together(back, "p3") == ["p1", "p2"]                 # the open cart survived
    assert together(back, "p1") == ["p2", "p3"]                 # and e1 again was a repeat


def test_after_a_snapshot_from_before_the_feed_the_first_replay_skips_what_observe_counted(
        catalog: Catalog) -> None:
    es = fresh(catalog)
    es.resume({"1": 7}, counted_before_ms=NOW_MS + 10)     # shard 1 already followed; shard 0 never
    old, new = event(VIEW, "p1", eid="old", t=NOW_MS), event(VIEW, "p2", eid="new", t=NOW_MS + 20)
    assert es.apply("0", [logged(1, old), logged(2, new)]).observed == 1
    assert trending(es, "p1") == 0 and trending(es, "p2") > 0
    assert es.apply("1", [logged(7, event(VIEW, "p3", eid="o3", t=NOW_MS))]).observed == 1


# -- through a real profile server ----------------------------------------------------------------
@dataclasses.dataclass
class Suite:
    root: Path
    profile_address: str
    profiles: profile_pb2_grpc.ProfileServiceStub


@contextlib.asynccontextmanager
async def profile_server(root: Path) -> AsyncIterator[Suite]:
    config = ProfileConfig(port=0, data_dir=str(root / "profile"), purge_interval_seconds=0)
    async with serving(build_profile(config), config) as running, \
            grpc.aio.insecure_channel(running.address) as channel:
        yield Suite(root, running.address, profile_pb2_grpc.ProfileServiceStub(channel))


def reco_config(suite: Suite) -> RecommendationConfig:
    return config_for(suite.root / "reco", follow_events=True, profile_addresses=suite.profile_address)


@contextlib.asynccontextmanager
async def recommendation(suite: Suite) -> AsyncIterator[RecommendationService]:
    config = reco_config(suite)
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        if not len(service.catalog):
            await stub.UpsertProducts(iter(products()), timeout=10)
        yield service


async def track(suite: Suite, events: list[common_pb2.Event]) -> int:
    """Track each event; the seq of the last."""
    seq = 0
    for e in events:
        seq = (await suite.profiles.Track(profile_pb2.TrackRequest(event=e), timeout=10)).seq
    return seq


async def caught_up(service: RecommendationService, seq: int) -> None:
    assert service.feeds is not None
    await asyncio.wait_for(service.feeds.followers[0].wait_for_cursor(seq + 1), WAIT)


def batch(prefix: str, n: int, *, user: str = "u1") -> list[common_pb2.Event]:
    kinds = (VIEW, CART, VIEW, BUY)
    return [event(kinds[i % 4], f"p{i % 5}", user, eid=f"{prefix}{i}", session=f"{prefix}s", order=f"{prefix}o",
                  t=NOW_MS + i) for i in range(n)]


def counts(signals: Signals, n: int) -> np.ndarray:
    """The stored trending counts of the first n rows (rows never counted are 0)."""
    items = signals.trending.items[:n]
    return np.pad(items, (0, n - items.size))


def reference(catalog: Catalog, events: list[common_pb2.Event]) -> EventSignals:
    """What counting each event exactly once gives."""
    es = fresh(catalog)
    es.apply("0", [logged(i + 1, e) for i, e in enumerate(events)])
    return es


async def test_tracked_events_reach_trending_live(tmp_path: Path) -> None:
    async with profile_server(tmp_path) as suite, recommendation(suite) as service:
        seq = await track(suite, [event(VIEW, "p3", eid="a1"), event(CART, "p3", eid="a2")])
        await caught_up(service, seq)
        assert service.recommend(Query("TRENDING", 3)).items[0].product_id == "p3"



async def test_while_the_feed_is_live_observe_counts_no_event_twice(tmp_path: Path) -> None:
    async with profile_server(tmp_path) as suite, recommendation(suite) as service:
        tracked = event(VIEW, "p1", eid="t1")
        await caught_up(service, await track(suite, [tracked]))
        assert service.feeds is not None and service.feeds.live
        no_id = event(VIEW, "p1", eid="")
        summary = await service.observe(_aiter([tracked, no_id, event(VIEW, "p1", eid="fresh")]))
        # the tracked one came by the feed; the one without id will (the profile names it); a new id counts
        assert (summary.observed, summary.ignored) == (1, 2)


async def _aiter(items: list[common_pb2.Event]) -> AsyncIterator[common_pb2.Event]:
    for item in items:
        yield item


async def test_restart_and_crash_resume_exactly_once(tmp_path: Path) -> None:
    first, second, third = batch("a", 20), batch("b", 20), batch("c", 20)
    async with profile_server(tmp_path) as suite:
        async with recommendation(suite) as service:
            await caught_up(service, await track(suite, first))
        # stopped cleanly: state and cursor saved together; events tracked while it is down
        seq = await track(suite, second)
        async with recommendation(suite) as service:
            await caught_up(service, seq)
            await service.save_signals()                                   # a checkpoint ...
            await caught_up(service, await track(suite, third))            # ... then more, and then
            assert service.signal_store is not None
            crashed = await asyncio.to_thread(service.signal_store.load)   # what a kill -9 now leaves
            expected = reference(service.catalog, first + second + third)
            n = len(service.catalog)
            np.testing.assert_allclose(counts(service.signals, n), counts(expected.signals, n))
        crashed_state(tmp_path, crashed)   # undo the save of the clean stop
        async with recommendation(suite) as service:
            await caught_up(service, seq + len(third))
            np.testing.assert_allclose(counts(service.signals, n), counts(expected.signals, n))
            assert service.signals.together.rows == expected.signals.together.rows


def crashed_state(root: Path, state: tuple[bytes | None, dict[str, int]]) -> None:
    """Put the checkpoint back, as a process killed after it would have left the store."""
    env = lmdb.open(str(root / "reco" / "recommendation" / "catalog.lmdb"), max_dbs=4)
    try:
        blob, cursors = state
        assert blob is not None
        SignalStore(env).save(blob, cursors)
    finally:
        env.close()


async def test_an_erasure_reaches_the_signals_in_lmdb(tmp_path: Path) -> None:
    async with profile_server(tmp_path) as suite, recommendation(suite) as service:
        await track(suite, [event(CART, "p1", "gone", eid="g1"), event(CART, "p1", "stays", eid="s1")])
        await suite.profiles.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id="gone"), timeout=10)
        await caught_up(service, await track(suite, [event(VIEW, "p2", "marker", eid="m1")]))
        assert "gone" not in service.signals.basket_users() and "stays" in service.signals.basket_users()
        blob, cursors = await asyncio.to_thread(service.signal_store.load)  # type: ignore[union-attr]
        assert blob is not None and cursors["0"] > 0
        with np.load(io.BytesIO(blob)) as data:
            assert "gone" not in data["basket_user"].tolist() and "stays" in data["basket_user"].tolist()


async def test_without_a_profile_service_observe_still_feeds_the_signals(tmp_path: Path) -> None:
    config = config_for(tmp_path, follow_events=True, profile_addresses="127.0.0.1:1")   # nothing listens
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter(products()), timeout=10)
        summary = await stub.Observe(iter([event(VIEW, "p2", eid="o1")]), timeout=10)
        assert summary.observed == 1
        top = await stub.Recommend(recommend_pb2.RecommendRequest(strategy=recommend_pb2.TRENDING, k=1), timeout=10)
        assert top.items[0].product_id == "p2"
