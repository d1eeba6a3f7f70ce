"""The demo store generator: determinism, distributions, contract validity and learnable structure."""

from __future__ import annotations

import collections
import itertools
import math
import re

import numpy as np
import pytest

from vitrine.demo.catalog import CATEGORIES, build_catalog, complement_indices, generate_products
from vitrine.demo.config import DAY_MS, REFERENCE_NOW_MS, DemoConfig
from vitrine.demo.sessions import (
    HistoryGenerator,
    iter_events,
    iter_histories,
    iter_sessions,
    iter_timed_sessions,
    split_by_time,
    time_split,
)
from vitrine.demo.shoppers import iter_shoppers
from vitrine.demo.store import RULE_CATEGORIES, demo_offers, demo_segments
from vitrine.v1 import common_pb2

SMALL = DemoConfig(n_products=3_000, n_shoppers=600, now_ms=REFERENCE_NOW_MS)
DEVICES = {"mobile", "desktop", "tablet"}
SOURCES = {"direct", "organic", "paid", "email", "social", "referral", "affiliate"}
NEEDS_PRODUCT = {common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART, common_pb2.REMOVE_FROM_CART, common_pb2.PURCHASE}


@pytest.fixture(scope="module")
def events() -> list[common_pb2.Event]:
    return list(iter_events(SMALL))


def _bytes(messages: object) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in messages]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- determinism

def test_same_seed_same_products_and_events() -> None:
    first = _bytes(itertools.islice(generate_products(2_000, 7), 300))
    again = _bytes(itertools.islice(generate_products(2_000, 7), 300))
    other = _bytes(itertools.islice(generate_products(2_000, 8), 300))
    assert first == again
    assert first != other
    cfg = DemoConfig(n_products=2_000, n_shoppers=300, seed=7, now_ms=REFERENCE_NOW_MS)
    a = _bytes(itertools.islice(iter_events(cfg), 3_000))
    b = _bytes(itertools.islice(iter_events(cfg), 3_000))
    c = _bytes(itertools.islice(iter_events(DemoConfig(n_products=2_000, n_shoppers=300, seed=8,
                                                       now_ms=REFERENCE_NOW_MS)), 3_000))
    assert a == b
    assert a != c


def test_shopper_is_the_same_whatever_is_read_before_it() -> None:
    cfg = DemoConfig(n_products=1_000, n_shoppers=50, now_ms=REFERENCE_NOW_MS, chunk_size=16)
    gen = HistoryGenerator(cfg)
    histories = list(iter_histories(cfg))
    shopper = list(iter_shoppers(gen.config, gen.catalog))[37]
    assert _bytes(gen.to_events(gen.history(shopper))) == _bytes(gen.to_events(histories[37]))


def test_shopper_ranges_partition_the_stream() -> None:
    cfg = DemoConfig(n_products=800, n_shoppers=90, now_ms=REFERENCE_NOW_MS, chunk_size=32)
    whole = _bytes(iter_events(cfg))
    parts = [_bytes(iter_events(cfg, shoppers=range(a, b))) for a, b in ((0, 20), (20, 70), (70, 200))]
    assert whole == parts[0] + parts[1] + parts[2]
    assert list(iter_events(cfg, shoppers=range(50, 50))) == []
    assert len(list(iter_sessions(cfg, shoppers=range(0, 45)))) + len(list(
        iter_sessions(cfg, shoppers=range(45, 90)))) == len(list(iter_sessions(cfg)))


# ---------------------------------------------------------------- catalog

def test_catalog_categories_prices_and_stock() -> None:
    catalog = build_catalog(20_000, 42)
    assert len(CATEGORIES) >= 20 and len({c.name for c in CATEGORIES}) == len(CATEGORIES)
    assert set(np.unique(catalog.category)) == set(range(len(CATEGORIES)))
    medians = []
    for c, spec in enumerate(CATEGORIES):
        logp = np.log(catalog.price[catalog.category == c])
        assert len(logp) > 50
        # log-normal: the log prices are roughly symmetric around log(median) with the category's sigma
        assert abs(np.median(logp) - spec.mu) < 0.35, spec.name
        assert 0.5 * spec.sigma < logp.std() < 2.0 * spec.sigma + 0.1, spec.name
        medians.append(float(np.exp(np.median(logp))))
    assert max(medians) / min(medians) > 50  # bikes vs socks
    assert np.allclose(np.round(catalog.price * 100) % 100, 99)
    assert 0.06 < (catalog.stock == 0).mean() < 0.10
    assert (catalog.stock >= 0).all() and (catalog.stock > 1).mean() > 0.8


def test_products_are_complete_and_brl_scales_prices() -> None:
    products = list(generate_products(500, 3))
    assert [p.product_id for p in products[:3]] == ["p000000", "p000001", "p000002"]
    names = {c.name for c in CATEGORIES}
    for p in products:
        assert p.title and p.brand and p.category in names and p.currency == "EUR"
        assert p.price > 0 and p.tags and p.attributes["style"]
        assert p.brand in p.title
    brl = list(generate_products(500, 3, currency="BRL"))
    assert all(b.currency == "BRL" for b in brl)
    ratio = np.median([b.price / p.price for p, b in zip(products, brl, strict=True)])
    assert 4.5 < ratio < 6.5


# ---------------------------------------------------------------- events

def test_events_are_valid_per_contract(events: list[common_pb2.Event]) -> None:
    catalog = build_catalog(SMALL.n_products, SMALL.seed)
    price = dict(zip(catalog.ids, catalog.prices, strict=True))
    start, end = SMALL.start_ms, SMALL.end_ms
    ids = set()
    for e in events:
        assert e.event_id and e.user_id and e.session_id
        assert e.type != common_pb2.EVENT_TYPE_UNSPECIFIED
        assert start <= e.timestamp_ms <= end
        if e.type in NEEDS_PRODUCT:
            assert e.product_id in price
        if e.type == common_pb2.PURCHASE:
            assert e.order_id and e.price == price[e.product_id] and e.quantity >= 1
        if e.type == common_pb2.SEARCH:
            assert e.query
        if e.type == common_pb2.CATEGORY_VIEW:
            assert e.category
        if e.type in (common_pb2.EMAIL_OPEN, common_pb2.EMAIL_CLICK):
            assert e.campaign_id
        if e.type == common_pb2.COUPON_APPLIED:
            assert e.coupon
        ctx = e.context
        assert ctx.device_type in DEVICES and ctx.traffic_source in SOURCES
        assert re.fullmatch(r"[A-Z]{2}", ctx.country) and ctx.language and ctx.currency and ctx.city
        assert ctx.os and ctx.browser and ctx.screen_width > 0 and ctx.screen_height > 0
        ids.add(e.event_id)
    assert len(ids) == len(events)
    types = collections.Counter(e.type for e in events)
    # Exposures are written by the gateway when it serves an experiment, never by a store.
    store_types = [t for t in common_pb2.EventType.values() if t and t != common_pb2.EXPOSURE]
    assert all(types[t] > 0 for t in store_types), types
    assert types[common_pb2.EXPOSURE] == 0
    assert types[common_pb2.PRODUCT_VIEW] > types[common_pb2.ADD_TO_CART] > types[common_pb2.PURCHASE] > 0


def test_each_shopper_in_time_order_and_sessions_by_user(events: list[common_pb2.Event]) -> None:
    by_shopper: dict[str, list[common_pb2.Event]] = collections.defaultdict(list)
    for e in events:
        by_shopper[e.event_id.rsplit("-", 1)[0]].append(e)
    for shopper_events in by_shopper.values():
        stamps = [e.timestamp_ms for e in shopper_events]
        assert stamps == sorted(stamps)
    session_users = collections.defaultdict(set)
    for e in events:
        session_users[e.session_id].add(e.user_id)
    assert all(len(u) == 1 for u in session_users.values())


def test_mixes_identity_and_campaigns(events: list[common_pb2.Event]) -> None:
    cfg = DemoConfig(n_products=2_000, n_shoppers=3_000, now_ms=REFERENCE_NOW_MS)
    shoppers = list(iter_shoppers(cfg, build_catalog(cfg.n_products, cfg.seed)))
    devices = collections.Counter(s.context.device_type for s in shoppers)
    assert 0.55 < devices["mobile"] / len(shoppers) < 0.65 and devices["tablet"] > 0
    assert devices["desktop"] > devices["tablet"]
    countries = {s.context.country for s in shoppers}
    assert {"BR", "PT", "US", "DE", "FR", "ES", "GB"} <= countries
    currency = {s.context.country: s.context.currency for s in shoppers}
    assert currency["BR"] == "BRL" and currency["PT"] == "EUR" and currency["US"] == "USD"
    assert {s.context.traffic_source for s in shoppers} == SOURCES
    for s in shoppers:
        ctx = s.context
        if ctx.traffic_source in ("paid", "email", "social", "affiliate"):
            assert ctx.utm.campaign and ctx.utm.source and ctx.utm.medium
        elif ctx.traffic_source in ("direct", "organic", "referral"):
            assert not ctx.utm.campaign
        if ctx.device_type == "mobile":
            assert ctx.os in ("iOS", "Android") and ctx.screen_width < 500
        if ctx.device_type == "desktop":
            assert ctx.os in ("Windows", "macOS", "Linux") and ctx.screen_width >= 1366
    campaigns = {s.context.utm.campaign for s in shoppers}
    assert {"black_friday_2026", "summer_running"} <= campaigns
    registered = [s for s in shoppers if s.user_id.startswith("c")]
    anonymous = [s for s in shoppers if s.user_id.startswith("v")]
    logins = [s for s in shoppers if s.login_session >= 0]
    assert 0.2 < len(registered) / len(shoppers) < 0.4 and len(anonymous) > len(registered)
    assert logins and all(s.user_id.startswith("v") and s.customer_id.startswith("c") for s in logins)
    # budgets follow the price scale of the main interest
    budget = collections.defaultdict(list)
    for s in shoppers:
        budget[CATEGORIES[s.top_categories[0]].name].append(s.budget)
    assert np.median(budget["road bikes"]) > 10 * np.median(budget["socks"])
    # shoppers who log in: anonymous visits first, then the customer id, and an Identify pair
    users = collections.defaultdict(list)
    for e in events:
        users[e.event_id.rsplit("-", 1)[0]].append(e.user_id)
    switched = [u for u in users.values() if u[0].startswith("v") and u[-1].startswith("c")]
    assert switched
    for ids in switched:
        first_customer = next(i for i, u in enumerate(ids) if u.startswith("c"))
        assert all(u.startswith("c") for u in ids[first_customer:])
    pairs = [h.identify for h in iter_histories(SMALL) if h.identify]
    assert pairs and all(a.startswith("v") and c.startswith("c") for a, c in pairs)


def test_purchases_are_a_minority_with_multi_item_baskets(events: list[common_pb2.Event]) -> None:
    users = {e.user_id for e in events}
    buyers = {e.user_id for e in events if e.type == common_pb2.PURCHASE}
    assert 0.03 < len(buyers) / len(users) < 0.5
    orders = collections.defaultdict(set)
    for e in events:
        if e.type == common_pb2.PURCHASE:
            orders[e.order_id].add(e.product_id)
    assert sum(len(o) >= 2 for o in orders.values()) / len(orders) > 0.2
    carts = {e.session_id for e in events if e.type == common_pb2.ADD_TO_CART}
    checkouts = {e.session_id for e in events if e.type == common_pb2.CHECKOUT}
    assert len(carts - checkouts) > 0  # abandoned carts


# ---------------------------------------------------------------- learnable structure

def test_co_views_follow_categories_and_styles(events: list[common_pb2.Event]) -> None:
    catalog = build_catalog(SMALL.n_products, SMALL.seed)
    index = {pid: i for i, pid in enumerate(catalog.ids)}
    pairs = same_cat = same_style = 0
    last: dict[str, int] = {}
    for e in events:
        if e.type != common_pb2.PRODUCT_VIEW:
            continue
        p = index[e.product_id]
        q = last.get(e.session_id)
        if q is not None:
            pairs += 1
            if catalog.category[p] == catalog.category[q]:
                same_cat += 1
                same_style += catalog.style[p] == catalog.style[q]
        last[e.session_id] = p
    shares = np.bincount(catalog.category, minlength=len(CATEGORIES)) / len(catalog)
    chance = float((shares ** 2).sum())
    assert pairs > 1_000
    assert same_cat / pairs > 5 * chance
    assert same_style / same_cat > 3 / SMALL.styles_per_category  # styles are preferred, not random


def test_bought_together_pairs_are_complementary(events: list[common_pb2.Event]) -> None:
    catalog = build_catalog(SMALL.n_products, SMALL.seed)
    index = {pid: i for i, pid in enumerate(catalog.ids)}
    complements = complement_indices(catalog.specs)
    orders = collections.defaultdict(list)
    for e in events:
        if e.type == common_pb2.PURCHASE:
            orders[e.order_id].append(int(catalog.category[index[e.product_id]]))
    related = total = 0
    for cats in orders.values():
        for a, b in itertools.combinations(cats, 2):
            total += 1
            related += a == b or b in complements[a] or a in complements[b]
    assert total > 20 and related / total > 0.5


# ---------------------------------------------------------------- sessions and split

def test_sessions_and_time_split() -> None:
    sessions = list(iter_sessions(SMALL))
    assert len(sessions) > 500
    assert all(len(s) >= 2 and all(re.fullmatch(r"p\d{6}", p) for p in s) for s in sessions)
    assert all(a != b for s in sessions for a, b in itertools.pairwise(s))
    timed = list(iter_timed_sessions(SMALL, min_length=1))
    assert len(timed) >= len(sessions)
    train, test, cutoff = time_split(SMALL, test_days=10)
    assert cutoff == SMALL.end_ms - 10 * DAY_MS
    assert train and test and len(train) > len(test)
    assert max(s.start_ms for s in train) < cutoff <= min(s.start_ms for s in test)
    assert len(train) + len(test) == len(sessions)
    a, b = split_by_time(timed, cutoff)
    assert len(a) + len(b) == len(timed)


def test_default_window_ends_now() -> None:
    cfg = DemoConfig(n_products=500, n_shoppers=20)
    assert cfg.now_ms is None
    resolved = cfg.resolved()
    assert resolved.now_ms is not None and resolved.resolved() is resolved
    stamps = [e.timestamp_ms for e in iter_events(resolved)]
    assert max(stamps) <= resolved.now_ms and min(stamps) >= resolved.now_ms - cfg.days * DAY_MS


def test_load_preset_streams_without_materializing() -> None:
    cfg = DemoConfig.preset("load", now_ms=REFERENCE_NOW_MS)
    assert (cfg.n_products, cfg.n_shoppers) == (100_000, 1_000_000)
    first = list(itertools.islice(iter_events(cfg), 10_000))
    assert len(first) == 10_000
    assert len({e.event_id for e in first}) == 10_000
    # ids are wide enough for a million shoppers
    assert re.fullmatch(r"[cv]\d{6}", first[0].user_id)
    assert max(int(e.event_id.split("-")[1]) for e in first) < cfg.chunk_size  # only the first chunk was drawn


def test_config_presets_and_validation() -> None:
    cfg = DemoConfig.preset("demo", seed=5)
    assert (cfg.n_products, cfg.n_shoppers, cfg.seed, cfg.scale) == (10_000, 5_000, 5, "demo")
    assert DemoConfig.preset("load", n_shoppers=10).n_shoppers == 10
    with pytest.raises(ValueError):
        DemoConfig.preset("huge")
    with pytest.raises(ValueError):
        DemoConfig(currency="USD")
    with pytest.raises(ValueError):
        DemoConfig(n_products=0)
    small = DemoConfig(n_products=300, n_shoppers=10, n_categories=20, now_ms=REFERENCE_NOW_MS)
    assert {e.category for e in iter_events(small) if e.category} <= {c.name for c in CATEGORIES[:20]}


# ---------------------------------------------------------------- segments and offers

def test_segment_rules_use_catalog_categories_and_offers_have_windows() -> None:
    names = {c.name for c in CATEGORIES}
    assert set(RULE_CATEGORIES) <= names
    segments = demo_segments()
    assert {"mobile_runners", "big_spenders", "lapsed_buyers", "email_engaged"} <= {s.segment_id for s in segments}
    for segment in segments:
        for name in re.findall(r'category_affinity\["([^"]+)"\]', segment.rule):
            assert name in names, (segment.segment_id, name)
        assert segment.rule.count("(") == segment.rule.count(")")
    offers = demo_offers(REFERENCE_NOW_MS)
    store_ids = {s.segment_id for s in segments}
    builtin = {"new_visitor", "returning_visitor", "returning_customer", "registered", "guest", "vip", "at_risk",
               "cart_abandoner"}
    for offer in offers:
        assert offer.slot in ("hero", "banner", "cart")
        for sid in offer.segment_ids:
            assert sid in store_ids or sid in builtin or re.fullmatch(r"(source|device|geo|utm_campaign):\w+", sid)
        assert not offer.ends_ms or offer.ends_ms > offer.starts_ms
    targeted = {sid for o in offers for sid in o.segment_ids}
    assert {"new_visitor", "cart_abandoner", "vip", "at_risk"} <= targeted
    active = [o for o in offers if o.starts_ms <= REFERENCE_NOW_MS and (not o.ends_ms or o.ends_ms > REFERENCE_NOW_MS)]
    assert 0 < len(active) < len(offers)


def test_cli_dry_run_prints_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    from vitrine.cli import main

    code = main(["demo", "--dry-run", "--products", "600", "--shoppers", "80", "--now-ms", str(REFERENCE_NOW_MS),
                 "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "running shoes" in out and "out of stock" in out and "PRODUCT_VIEW" in out
    assert "device mix: mobile" in out and "source mix" in out
    assert math.isfinite(float(re.search(r"same category: ([\d.]+)%", out).group(1)))  # type: ignore[union-attr]
