"""The service reads Profile/Context messages with the meaning of scoring.rules.plain, and the
vectorized EstimateSize path counts exactly what per-profile evaluation matches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.rules import compile_program, compile_rule
from scoring.rules.plain import features
from services.segmentation.engine import count_matching
from services.segmentation.fields import SCHEMA, FeatureReader, reading_order
from tests.segmentation.rules_support import message_matches
from vitrine.v1 import common_pb2 as c

NOW = 1_763_900_000_000
DAY = 86_400_000
TODAY = NOW // DAY
EVENT_NAMES = {v.number: v.name for v in c.EventType.DESCRIPTOR.values}

words = st.sampled_from(["", "a", "mobile", "FR", "p1", "p2", "email", "spring", "zz", "q"])
counts = st.integers(0, 9)
money = st.floats(0, 1e4, allow_nan=False)
stamps = st.one_of(st.just(0), st.integers(NOW - 120 * DAY, NOW))
contexts = st.builds(c.Context, device_type=words, country=words, traffic_source=words, screen_width=counts,
                     utm=st.builds(c.Utm, campaign=words))
profiles = st.builds(
    c.Profile,
    user_id=words, customer_id=words, registered=st.booleans(), visit_count=counts, event_count=counts,
    purchase_count=counts, total_spend=money, avg_order_value=money, first_seen_ms=stamps, last_seen_ms=stamps,
    last_purchase_ms=stamps, last_cart_change_ms=stamps, last_checkout_ms=stamps,
    recently_viewed=st.lists(words, max_size=3), purchased_product_ids=st.lists(words, max_size=3),
    category_affinity=st.dictionaries(st.sampled_from(["running", "yoga"]), money, max_size=2),
    traits=st.dictionaries(st.sampled_from(["gender", "tier"]), words, max_size=2),
    rfm=st.builds(c.Rfm, r_score=st.integers(0, 5), f_score=st.integers(0, 5), m_score=st.integers(0, 5),
                  recency_days=money),
    cart=st.lists(st.builds(c.CartItem, product_id=words, quantity=st.integers(0, 3), price=money), max_size=3),
    consent=st.builds(c.Consent, marketing=st.booleans(), updated_ms=stamps),
    last_context=contexts, first_context=contexts,
    daily_events=st.lists(st.builds(c.DailyEventCount, day=st.integers(TODAY - 40, TODAY + 1),
                                    type=st.sampled_from(sorted(EVENT_NAMES)[1:]), count=counts), max_size=30),
)

RULES = [
    "visit_count >= 3 and total_spend > 100",
    'registered or customer_id != ""',
    'category_affinity["running"] > 5000 or traits["gender"] == "a"',
    '"p1" in recently_viewed and recently_viewed[0] != "p2"',
    '"p1" in purchased_product_ids or "yoga" in category_affinity',
    'events("PURCHASE", days=7) >= 2 or events("PAGE_VIEW", days=30) > 5',
    "days_since(last_seen_ms) < 30 and hours_since(last_purchase_ms) > 48",
    'cart_size >= 2 and cart_value > 1000 and "p1" in cart_product_ids',
    "rfm.r_score + rfm.f_score + rfm.m_score >= 10",
    'last_context.country in ["FR", "a"] and first_context.device_type != "mobile"',
    "customer_id == user_id or context.country == last_context.country",  # unknown strings compared
    'recently_viewed[1] == traits["gender"] and size(purchased_product_ids) > 1 and not has(traits["tier"])',
    'context.device_type == "mobile" and context.utm.campaign == "spring"',
    "consent.marketing and consent.updated_ms > 0 and size(traits) >= 1",
    "last_context.screen_width * 2 > 9 and has(last_context.utm.campaign)",
]
compiled_rules = [compile_rule(r, SCHEMA) for r in RULES]
EVENTS_ONLY = compile_rule('events("PURCHASE", days=30) > 2 or events("SEARCH", days=3) == 0', SCHEMA)
NOTHING = compile_rule("true", SCHEMA)


def to_plain(profile: c.Profile, context: c.Context) -> dict[str, Any]:
    """The profile as plain nested data, with the derived cart fields."""

    def ctx(x: c.Context) -> dict[str, Any]:
        return {"device_type": x.device_type, "country": x.country, "traffic_source": x.traffic_source,
                "screen_width": x.screen_width, "utm": {"campaign": x.utm.campaign}}

    qty = [i.quantity or 1 for i in profile.cart]
    return {
        "user_id": profile.user_id, "customer_id": profile.customer_id, "registered": profile.registered,
        "visit_count": profile.visit_count, "event_count": profile.event_count,
        "purchase_count": profile.purchase_count, "total_spend": profile.total_spend,
        "avg_order_value": profile.avg_order_value, "first_seen_ms": profile.first_seen_ms,
        "last_seen_ms": profile.last_seen_ms, "last_purchase_ms": profile.last_purchase_ms,
        "last_cart_change_ms": profile.last_cart_change_ms, "last_checkout_ms": profile.last_checkout_ms,
        "recently_viewed": list(profile.recently_viewed),
        "purchased_product_ids": list(profile.purchased_product_ids),
        "category_affinity": dict(profile.category_affinity), "traits": dict(profile.traits),
        "rfm": {"r_score": profile.rfm.r_score, "f_score": profile.rfm.f_score, "m_score": profile.rfm.m_score,
                "recency_days": profile.rfm.recency_days},
        "cart_size": sum(qty), "cart_value": sum(i.price * q for i, q in zip(profile.cart, qty, strict=True)),
        "cart_product_ids": [i.product_id for i in profile.cart],
        "consent": {"marketing": profile.consent.marketing, "updated_ms": profile.consent.updated_ms},
        "last_context": ctx(profile.last_context), "first_context": ctx(profile.first_context),
        "context": ctx(context),
        "daily_events": [(e.day, EVENT_NAMES[e.type], e.count) for e in profile.daily_events],
    }


# Every rule alone, and all of them in one program (shared features, grouped reading order).
PROGRAMS = [compile_program([r.expr], reading_order(r.accesses)) for r in compiled_rules] + [
    compile_program([r.expr for r in compiled_rules],
                    reading_order(dict.fromkeys(a for r in compiled_rules for a in r.accesses)))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=profiles, context=contexts)
def test_message_accesses_mean_what_plain_accesses_mean(profile: c.Profile, context: c.Context) -> None:
    plain = to_plain(profile, context)
    for program in PROGRAMS:
        reader = FeatureReader(program)
        from_message = reader.read(profile, context, NOW)
        from_plain = features(program, plain, NOW)
        assert from_message.tolist() == from_plain.tolist(), [a.key for a in program.numbers + program.strings]
        expected = program.matching(from_plain, NOW).tolist()
        assert program.matching(from_message, NOW).tolist() == expected
        assert reader.matching(profile, context, NOW).tolist() == expected  # windows inside the kernel


async def _stream(items: list[c.Profile], as_bytes: list[bool]) -> AsyncIterator[c.Profile | bytes]:
    for item, raw in zip(items, as_bytes, strict=False):
        yield item.SerializeToString() if raw else item  # ScanProfiles streams bytes; tests may pass messages


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(profiles, max_size=40), rule_index=st.integers(0, len(RULES) + 1),
       chunk=st.integers(1, 16), as_bytes=st.lists(st.booleans(), min_size=40, max_size=40))
async def test_vectorized_estimate_agrees_with_per_profile_evaluation(
        batch: list[c.Profile], rule_index: int, chunk: int, as_bytes: list[bool]) -> None:
    rule = ([*compiled_rules, EVENTS_ONLY, NOTHING])[rule_index]
    expected = sum(message_matches([rule], p, c.Context(), NOW)[0] for p in batch)
    got = await count_matching(rule, _stream(batch, as_bytes), NOW, chunk_rows=chunk)
    assert got == (expected, len(batch)), rule.source
