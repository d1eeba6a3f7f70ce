"""Synthetic, seeded workloads for the segmentation benchmarks: 100 store-defined rules,
a well-filled shopper profile, and columns for a million profiles."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import numpy as np

from scoring.rules import VT, ColumnBatch, CompiledRule
from scoring.units import DAY_MS as DAY
from services.segmentation.engine import SegmentEngine
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import segment_pb2 as s

NOW = 1_763_900_000_000
CATEGORIES = [f"cat{i}" for i in range(30)] + ["running", "yoga", "shoes", "outdoor"]
EVENTS = ["PAGE_VIEW", "PRODUCT_VIEW", "ADD_TO_CART", "PURCHASE", "SEARCH", "EMAIL_CLICK"]
DEVICES = ["mobile", "tablet", "desktop"]
COUNTRIES = ["FR", "DE", "ES", "IT", "GB", "US", "NL", "BE"]
SOURCES = ["direct", "organic", "paid", "email", "social", "referral", "affiliate"]
CAMPAIGNS = [f"camp{i}" for i in range(20)]

TEMPLATES = [
    'category_affinity["{cat}"] > {x}',
    'events("{event}", days={days}) >= {n}',
    'context.device_type == "{device}" and visit_count >= {n}',
    'last_context.country in ["{country}", "{country2}"] and total_spend > {money}',
    "days_since(last_seen_ms) < {days} and purchase_count >= {n}",
    'traits["tier"] == "gold" or rfm.m_score >= {score}',
    '"p{pid}" in purchased_product_ids',
    'context.utm.campaign == "{campaign}" and not registered',
    "cart_value > {money} and minutes_since(last_cart_change_ms) > 30",
    'visit_count >= {n} and context.device_type == "{device}" and category_affinity["{cat}"] > {x} '
    'and events("PURCHASE", days=30) == 0 and days_since(last_seen_ms) < 7',
    'context.traffic_source in ["{source}", "paid"] and (rfm.r_score + rfm.f_score >= {score} or has(customer_id))',
    'not (context.country == "{country}") and avg_order_value * 2 > {money}',
]


def store_rules(count: int = 100, seed: int = 7) -> list[s.Segment]:
    rnd = random.Random(seed)
    segments = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        rule = template.format(
            cat=rnd.choice(CATEGORIES), x=round(rnd.uniform(0.05, 0.9), 2), event=rnd.choice(EVENTS),
            days=rnd.choice([1, 7, 14, 30, 90]), n=rnd.randint(0, 6), device=rnd.choice(DEVICES),
            country=rnd.choice(COUNTRIES), country2=rnd.choice(COUNTRIES), money=rnd.randint(10, 500),
            score=rnd.randint(3, 9), pid=rnd.randint(0, 60), campaign=rnd.choice(CAMPAIGNS),
            source=rnd.choice(SOURCES),
        )
        segments.append(s.Segment(segment_id=f"rule{i:03d}", rule=rule, priority=rnd.randint(-100, 300)))
    return segments


def offers(count: int = 50, seed: int = 8) -> list[s.Offer]:
    rnd = random.Random(seed)
    targets = [f"rule{i:03d}" for i in range(100)] + ["vip", "new_visitor", "guest", "cart_abandoner"]
    return [s.Offer(offer_id=f"offer{i:03d}", title="t", segment_ids=rnd.sample(targets, 3),
                    priority=rnd.randint(0, 100), starts_ms=NOW - DAY if i % 3 else 0,
                    ends_ms=NOW + DAY if i % 4 else 0) for i in range(count)]


def store_engine(experiments: Sequence[s.Experiment] = ()) -> SegmentEngine:
    """An in-process engine at NOW holding the store's 100 rules and 50 offers, and `experiments`."""
    engine = SegmentEngine(clock=lambda: NOW)

    async def load() -> None:
        for segment in store_rules(100):
            await engine.put_segment(segment)
        for offer in offers(50):
            await engine.put_offer(offer)
        for experiment in experiments:
            await engine.put_experiment(experiment)

    asyncio.run(load())
    return engine


def shopper() -> tuple[c.Profile, c.Context]:
    rnd = random.Random(3)
    today = NOW // DAY
    context = c.Context(device_type="mobile", os="iOS", country="FR", traffic_source="email", language="fr",
                        utm=c.Utm(source="newsletter", medium="email", campaign="camp3"))
    profile = c.Profile(
        user_id="u-123", customer_id="c-123", registered=True, first_seen_ms=NOW - 200 * DAY,
        last_seen_ms=NOW - 2 * DAY, visit_count=14, event_count=230, purchase_count=4, total_spend=412.5,
        avg_order_value=103.1, avg_session_spend=29.4, last_purchase_ms=NOW - 20 * DAY,
        recently_viewed=[f"p{i}" for i in range(20)], purchased_product_ids=[f"p{i}" for i in range(0, 45, 3)],
        category_affinity={cat: round(rnd.random(), 3) for cat in CATEGORIES[:20]},
        cart=[c.CartItem(product_id=f"p{i}", quantity=1, price=25.0) for i in range(3)],
        rfm=c.Rfm(recency_days=20, frequency=4, monetary=412.5, r_score=4, f_score=3, m_score=4),
        email_opens=12, email_clicks=3, last_context=context, first_context=context,
        consent=c.Consent(personalization=True, marketing=True), traits={"tier": "silver", "gender": "f"},
        last_cart_change_ms=NOW - 3 * 3_600_000, last_checkout_ms=NOW - 20 * DAY,
    )
    for day in range(30):
        for kind in (c.PAGE_VIEW, c.PRODUCT_VIEW) if day % 2 else (c.PAGE_VIEW,):
            profile.daily_events.add(day=today - day * 3, type=kind, count=rnd.randint(1, 9))
    return profile, context


def typical_shopper() -> tuple[c.Profile, c.Context]:
    """A median shopper: a few visits, a few categories, 6 daily counters."""
    today = NOW // DAY
    profile = c.Profile(user_id="anon-9", visit_count=3, event_count=17, first_seen_ms=NOW - 9 * 86_400_000,
                        last_seen_ms=NOW - 3_600_000, recently_viewed=["p1", "p2", "p3", "p4"],
                        category_affinity={"running": 0.6, "shoes": 0.3, "cat3": 0.1},
                        last_context=c.Context(device_type="mobile", country="DE", traffic_source="organic"))
    for day, kind, count in ((0, c.PAGE_VIEW, 5), (0, c.PRODUCT_VIEW, 3), (2, c.PAGE_VIEW, 4),
                             (2, c.ADD_TO_CART, 1), (9, c.PAGE_VIEW, 3), (9, c.SEARCH, 1)):
        profile.daily_events.add(day=today - day, type=kind, count=count)
    return profile, c.Context(device_type="mobile", country="DE", traffic_source="organic")


def synthetic_columns(rule: CompiledRule, rows: int, seed: int = 11) -> ColumnBatch:
    """Columns for `rows` random profiles, generated directly (no messages)."""
    rng = np.random.default_rng(seed)
    vocab = {v: i for i, v in enumerate(["", *DEVICES, *COUNTRIES, *SOURCES, *CAMPAIGNS, "gold", "silver"])}
    columns = {}
    for access in rule.accesses:
        if access.type is VT.BOOL:
            columns[access.key] = rng.random(rows) < 0.3
        elif access.type is VT.STRING:
            columns[access.key] = rng.integers(0, len(vocab), rows, dtype=np.int32)
        elif access.field.endswith("_ms"):
            columns[access.key] = (NOW - rng.integers(0, 400 * DAY, rows)).astype(np.float64)
        elif access.kind == "key":                        # affinities in [0, 1)
            columns[access.key] = rng.random(rows)
        elif access.kind == "events":                     # mostly zero, sometimes a few
            columns[access.key] = rng.poisson(0.5, rows).astype(np.float64)
        elif access.field.startswith("rfm."):             # scores 1..5
            columns[access.key] = rng.integers(1, 6, rows).astype(np.float64)
        else:                                             # counts and money: 0, 1, ... a few hundred
            columns[access.key] = np.floor(rng.gamma(1.2, 40.0, rows))
    return ColumnBatch(rows, columns, vocab)
