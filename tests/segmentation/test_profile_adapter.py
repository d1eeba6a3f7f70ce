"""The service reads Profile/Context messages with the meaning of scoring.rules.plain, and the
vectorized EstimateSize path counts exactly what per-profile evaluation matches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.rules import VT, Access, FieldType, compile_program, compile_rule
from scoring.rules.plain import features
from scoring.rules.wire import MALFORMED
from scoring.units import DAY_MS as DAY
from services.segmentation.engine import count_matching
from services.segmentation.fields import SCHEMA, FeatureReader, WireReader, reading_order
from tests.segmentation.rules_support import message_matches
from vitrine.v1 import common_pb2 as c

NOW = 1_763_900_000_000
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
    cart=st.lists(st.builds(c.CartItem, product_id=words, quantity=st.integers(-2, 3), price=money), max_size=3),
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
    'cart_product_ids[1] == "p2" or size(cart_product_ids) == 2 or size(category_affinity) == 1',
    'first_context.utm.campaign == "spring" and context.screen_width > 3 and traits["tier"] == "q"',
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

    qty = [i.quantity if i.quantity > 0 else 1 for i in profile.cart]  # a quantity <= 0 counts 1
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
        from_plain = features(program, plain, NOW)
        expected = program.matching(from_plain, NOW).tolist()
        for reader in (FeatureReader(program), WireReader(program)):  # protobuf API, wire bytes
            from_message = reader.read(profile, context, NOW)
            assert from_message.tolist() == from_plain.tolist(), (type(reader).__name__, [
                a.key for a in program.numbers + program.strings])
            assert program.matching(from_message, NOW).tolist() == expected
            assert reader.matching(profile, context, NOW).tolist() == expected


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


def _every_access() -> list[Access]:
    """Each schema field read every way a rule can read it."""
    out: list[Access] = []
    for name, kind in SCHEMA.fields.items():
        if kind.is_scalar:
            t = {FieldType.STRING: VT.STRING, FieldType.BOOL: VT.BOOL}.get(kind, VT.NUMBER)
            out.append(Access("field", name, None, t))
        elif kind is FieldType.STRING_LIST:
            out += [Access("index", name, 0, VT.STRING), Access("index", name, 2, VT.STRING),
                    Access("contains", name, "p2", VT.BOOL), Access("size", name, None, VT.NUMBER)]
        else:
            t = VT.NUMBER if kind is FieldType.NUMBER_MAP else VT.STRING
            out += [Access("key", name, "running", t), Access("key", name, "tier", t),
                    Access("contains", name, "tier", VT.BOOL), Access("size", name, None, VT.NUMBER)]
    out += [Access("events", name, days, VT.NUMBER) for name in ("PURCHASE", "PAGE_VIEW") for days in (1, 30)]
    return out


def _everything_set() -> tuple[c.Profile, c.Context]:
    """A profile and a context with every field the schema names set to something not default."""
    def fill(message: Any, depth: int = 0) -> None:
        for field in message.DESCRIPTOR.fields:
            value = getattr(message, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                if field.message_type.fields_by_name["value"].type == field.TYPE_STRING:
                    value.update({"tier": "gold", "gender": "f"})
                else:
                    value.update({"running": 2.5, "tier": -1.0})
            elif field.is_repeated and field.message_type is None:
                if field.type == field.TYPE_STRING:
                    value.extend(["p1", "p2", "p3"])
                else:
                    value.extend([1.0] if field.type == field.TYPE_DOUBLE else [2, 1, 1])
            elif field.message_type is not None and not field.is_repeated:
                fill(value, depth + 1)
            elif field.type == field.TYPE_STRING:
                setattr(message, field.name, f"{field.name}-v")
            elif field.type == field.TYPE_BOOL:
                setattr(message, field.name, True)
            elif field.type == field.TYPE_DOUBLE:
                setattr(message, field.name, 12.25)
            elif field.type == field.TYPE_INT64:
                setattr(message, field.name, NOW - 5 * DAY)
            elif field.type in (field.TYPE_INT32, field.TYPE_ENUM):
                setattr(message, field.name, -3 if field.name == "screen_height" else 7)
    profile, context = c.Profile(), c.Context()
    fill(profile)
    fill(context)
    profile.cart.add(product_id="p2", quantity=-1, price=3.5)
    profile.cart.add(product_id="p9", quantity=4, price=1.25)
    for day, kind in ((TODAY, c.PURCHASE), (TODAY - 3, c.PAGE_VIEW), (TODAY - 40, c.PURCHASE)):
        profile.daily_events.add(day=day, type=kind, count=2)
    return profile, context


def test_every_schema_field_reads_the_same_from_wire_bytes_and_from_the_protobuf_api() -> None:
    accesses = _every_access()
    program = compile_program([compile_rule("true", SCHEMA).expr], reading_order(accesses))
    assert len(program.numbers) + len(program.strings) == len(accesses)
    wire, api = WireReader(program), FeatureReader(program)
    for profile, context in (_everything_set(), (c.Profile(), c.Context())):
        from_api = api.read(profile, context, NOW)
        from_wire = wire.read(profile, context, NOW)
        slots = program.numbers + program.strings
        assert {a.key: v for a, v in zip(slots, from_wire.tolist(), strict=True)} == {
            a.key: v for a, v in zip(slots, from_api.tolist(), strict=True)}
    assert wire.read(*_everything_set(), NOW).any()


def test_wire_reader_falls_back_to_the_protobuf_api_on_bytes_it_does_not_expect() -> None:
    program = PROGRAMS[-1]
    reader = WireReader(program)
    profile, context = _everything_set()
    expected = FeatureReader(program).matching(profile, context, NOW).tolist()

    class Refusing:  # what the kernel answers for bytes its reads do not fit
        def read(self, message: bytes, now_ms: int) -> None:
            return None

        def run(self, message: bytes, now_ms: float) -> np.ndarray:
            return np.array([MALFORMED])

    reader.wire = Refusing()  # type: ignore[assignment]
    assert reader.matching(profile, context, NOW).tolist() == expected
    assert reader.read(profile, context, NOW).tolist() == FeatureReader(program).read(profile, context, NOW).tolist()
