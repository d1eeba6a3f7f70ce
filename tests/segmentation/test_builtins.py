"""Every built-in segment, with shoppers just inside and just outside it."""

from __future__ import annotations

import operator

import pytest

from scoring.units import DAY_MS as DAY
from scoring.units import MINUTE_MS as MINUTE
from services.segmentation import builtins
from services.segmentation import config as cfg
from services.segmentation.engine import SegmentEngine
from vitrine.v1 import common_pb2 as c

NOW = 1_763_900_000_000


@pytest.fixture(scope="module")
def engine() -> SegmentEngine:
    return SegmentEngine()


def segments(engine: SegmentEngine, profile: c.Profile | None = None, context: c.Context | None = None) -> list[str]:
    return engine.evaluate(profile, context, NOW)[0]


def test_missing_or_empty_profile_is_a_new_guest(engine: SegmentEngine) -> None:
    assert segments(engine) == ["new_visitor", "guest"]
    assert segments(engine, c.Profile(), c.Context()) == ["new_visitor", "guest"]


@pytest.mark.parametrize(("segment", "inside", "outside"), [
    ("new_visitor", c.Profile(visit_count=1), c.Profile(visit_count=2)),
    ("new_visitor", c.Profile(visit_count=0), c.Profile(visit_count=1, purchase_count=1)),
    ("returning_visitor", c.Profile(visit_count=2), c.Profile(visit_count=1)),
    ("returning_visitor", c.Profile(visit_count=9), c.Profile(visit_count=9, purchase_count=1)),
    ("returning_customer", c.Profile(visit_count=2, purchase_count=1), c.Profile(visit_count=2)),
    ("returning_customer", c.Profile(visit_count=2, purchase_count=1), c.Profile(visit_count=1, purchase_count=1)),
    ("registered", c.Profile(registered=True), c.Profile()),
    ("registered", c.Profile(customer_id="c-1"), c.Profile(user_id="anon-1")),
    ("guest", c.Profile(user_id="anon-1"), c.Profile(customer_id="c-1")),
    ("guest", c.Profile(), c.Profile(registered=True)),
    ("vip", c.Profile(purchase_count=2, rfm=c.Rfm(r_score=5, f_score=4, m_score=4)),
     c.Profile(purchase_count=2, rfm=c.Rfm(r_score=4, f_score=4, m_score=4))),
    ("vip", c.Profile(purchase_count=2, rfm=c.Rfm(r_score=5, f_score=5, m_score=5)),
     c.Profile(purchase_count=1, rfm=c.Rfm(r_score=5, f_score=5, m_score=5))),
    ("at_risk", c.Profile(purchase_count=2, last_purchase_ms=NOW - 60 * DAY),
     c.Profile(purchase_count=2, last_purchase_ms=NOW - 60 * DAY + 1)),
    ("at_risk", c.Profile(purchase_count=1, rfm=c.Rfm(m_score=4), last_purchase_ms=NOW - 90 * DAY),
     c.Profile(purchase_count=1, rfm=c.Rfm(m_score=3), last_purchase_ms=NOW - 90 * DAY)),
    ("at_risk", c.Profile(purchase_count=3, last_purchase_ms=NOW - 400 * DAY),
     c.Profile(purchase_count=0, rfm=c.Rfm(m_score=5))),
    ("cart_abandoner",
     c.Profile(cart=[c.CartItem(product_id="p1", quantity=1)], last_cart_change_ms=NOW - 60 * MINUTE),
     c.Profile(cart=[c.CartItem(product_id="p1", quantity=1)], last_cart_change_ms=NOW - 60 * MINUTE + 1)),
    ("cart_abandoner",
     c.Profile(cart=[c.CartItem(product_id="p1")], last_cart_change_ms=NOW - 2 * DAY,
               last_checkout_ms=NOW - 3 * DAY),
     c.Profile(cart=[c.CartItem(product_id="p1")], last_cart_change_ms=NOW - 2 * DAY,
               last_checkout_ms=NOW - 2 * DAY)),
    ("cart_abandoner",
     c.Profile(cart=[c.CartItem(product_id="p1")], last_cart_change_ms=NOW - DAY),
     c.Profile(last_cart_change_ms=NOW - DAY)),
])
def test_builtin_boundaries(engine: SegmentEngine, segment: str, inside: c.Profile, outside: c.Profile) -> None:
    assert segment in segments(engine, inside)
    assert segment not in segments(engine, outside)


def test_thresholds_come_from_config() -> None:
    engine = SegmentEngine(cart_abandon_minutes=5, at_risk_quiet_days=10)
    cart = c.Profile(cart=[c.CartItem(product_id="p1")], last_cart_change_ms=NOW - 5 * MINUTE)
    assert "cart_abandoner" in segments(engine, cart)
    quiet = c.Profile(purchase_count=2, last_purchase_ms=NOW - 10 * DAY)
    assert "at_risk" in segments(engine, quiet)
    default = SegmentEngine()
    assert "cart_abandoner" not in segments(default, cart)
    assert "at_risk" not in segments(default, quiet)
    assert cfg.CART_ABANDON_MINUTES == 60 and cfg.AT_RISK_QUIET_DAYS == 60


def test_context_segments_from_request_context(engine: SegmentEngine) -> None:
    context = c.Context(traffic_source="email", device_type="mobile", country="FR", utm=c.Utm(campaign="spring"))
    found = segments(engine, c.Profile(), context)
    assert found == ["new_visitor", "guest", "utm_campaign:spring", "source:email", "geo:FR", "device:mobile"]


def test_context_segments_fall_back_to_last_context_per_field(engine: SegmentEngine) -> None:
    profile = c.Profile(last_context=c.Context(traffic_source="organic", device_type="desktop", country="DE"))
    found = segments(engine, profile, c.Context(device_type="mobile"))
    assert "device:mobile" in found and "device:desktop" not in found
    assert "source:organic" in found and "geo:DE" in found
    assert not any(s.startswith("utm_campaign:") for s in found)


def test_context_values_too_long_or_unprintable_make_no_segment(engine: SegmentEngine) -> None:
    found = segments(engine, c.Profile(), c.Context(country="x" * 65, traffic_source="a\nb"))
    assert not any(s.startswith(("geo:", "source:")) for s in found)


def test_order_is_priority_then_id(engine: SegmentEngine) -> None:
    profile = c.Profile(visit_count=5, purchase_count=3, registered=True, last_purchase_ms=NOW - 70 * DAY,
                        rfm=c.Rfm(r_score=5, f_score=5, m_score=5))
    assert segments(engine, profile) == ["vip", "at_risk", "returning_customer", "registered"]


def _uncached_context_segments(profile: c.Profile, context: c.Context) -> list[tuple[int, str]]:
    """The definition, value by value (the ids' order among themselves is by priority)."""
    out = []
    for family in builtins.CONTEXT_FAMILIES:
        value = operator.attrgetter(family.field)(context) or operator.attrgetter(family.field)(profile.last_context)
        if builtins.valid_context_value(value):
            out.append((family.priority, f"{family.prefix}:{value}"))
    return sorted(out, key=lambda s: -s[0])


def test_context_segments_cache_answers_as_the_definition() -> None:
    # More distinct value tuples than the cache holds, each asked twice, with and without last_context.
    for i in range(2 * builtins._CACHE_SIZE + 10):
        context = c.Context(country=f"C{i % 7}", device_type="" if i % 3 else "mobile",
                            traffic_source="" if i % 5 == 0 else f"s{i}", utm=c.Utm(campaign="" if i % 2 else "x"))
        for profile in (c.Profile(), c.Profile(last_context=c.Context(device_type=f"d{i % 4}", traffic_source="ref",
                                                                     utm=c.Utm(campaign="last"), country="ZZ"))):
            for _ in range(2):
                assert list(builtins.context_segments(profile, context)) == _uncached_context_segments(profile, context)
    assert len(builtins._cache) <= builtins._CACHE_SIZE
