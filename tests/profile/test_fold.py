"""The fold without LMDB: every profile field's maintenance, merge and the read-time view."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.profile import config as C
from services.profile import fold
from services.profile.rfm import RfmSketch
from services.profile.validation import validate_event
from tests.profile.helpers import DAY_MS, ET, MIN_MS, ev
from vitrine.v1 import common_pb2

T0 = 1_780_000_000_000  # a fixed time: the fold has no clock


def run(*events: common_pb2.Event, flags: int = 0, settings: fold.FoldSettings = fold.FoldSettings()):  # type: ignore[no-untyped-def]
    state = fold.new_state("u1")
    for event in events:
        fold.apply_event(state, event, flags, settings)
    return state


def test_new_profile_defaults() -> None:
    p = fold.new_state("u1").profile
    assert p.user_id == "u1" and p.consent.personalization and not p.consent.marketing


def test_visits_by_session_and_inactivity() -> None:
    s = run(
        ev(ET.PAGE_VIEW, t=T0, session_id="a"),
        ev(ET.PAGE_VIEW, t=T0 + 10 * MIN_MS, session_id="a"),   # same visit
        ev(ET.PAGE_VIEW, t=T0 + 45 * MIN_MS, session_id="a"),   # 35 min idle: new visit
        ev(ET.PAGE_VIEW, t=T0 + 46 * MIN_MS, session_id="b"),   # new session: new visit
        ev(ET.PAGE_VIEW, t=T0 + 47 * MIN_MS, session_id=""),    # no session id, not idle: same visit
    )
    assert s.profile.visit_count == 3
    assert s.profile.last_session_id == "b"


def test_first_and_last_seen_with_a_late_event() -> None:
    s = run(ev(ET.PAGE_VIEW, t=T0), ev(ET.PAGE_VIEW, t=T0 + MIN_MS), ev(ET.PAGE_VIEW, t=T0 - MIN_MS))
    assert (s.profile.first_seen_ms, s.profile.last_seen_ms) == (T0 - MIN_MS, T0 + MIN_MS)
    assert s.profile.event_count == 3


def test_email_open_is_not_a_visit() -> None:
    s = run(ev(ET.EMAIL_OPEN, t=T0, campaign_id="c1"), ev(ET.EMAIL_CLICK, t=T0 + 1, campaign_id="c1"),
            ev(ET.EMAIL_OPEN, t=T0 + 2))
    p = s.profile
    assert (p.email_opens, p.email_clicks, p.last_email_click_ms) == (2, 1, T0 + 1)
    assert p.visit_count == 1 and p.first_seen_ms == T0 + 1


def test_recently_viewed_dedup_bounded_newest_first() -> None:
    views = [ev(ET.PRODUCT_VIEW, t=T0 + i, product_id=f"p{i}") for i in range(30)]
    s = run(*views, ev(ET.PRODUCT_VIEW, t=T0 + 100, product_id="p12"))
    rv = list(s.profile.recently_viewed)
    assert len(rv) == C.RECENTLY_VIEWED_LENGTH
    assert rv[:3] == ["p12", "p29", "p28"]
    assert len(set(rv)) == len(rv)
    assert list(s.recently_viewed_ms) == sorted(s.recently_viewed_ms, reverse=True)


def test_recent_searches() -> None:
    s = run(ev(ET.SEARCH, t=T0, query="a"), ev(ET.SEARCH, t=T0 + 1, query="b"), ev(ET.SEARCH, t=T0 + 2, query="a"))
    assert list(s.profile.recent_searches) == ["a", "b"]


def test_category_affinity_is_time_decayed_share() -> None:
    half_life = fold.FoldSettings().affinity_half_life_ms
    s = run(ev(ET.PRODUCT_VIEW, t=T0, category="old"),
            ev(ET.PRODUCT_VIEW, t=int(T0 + half_life), category="new"))
    view = fold.public_view(s, int(T0 + half_life))
    aff = dict(view.category_affinity)
    # one half-life apart: the old view weighs half as much as the new one
    assert aff["new"] == pytest.approx(2 / 3, abs=1e-6)
    assert aff["old"] == pytest.approx(1 / 3, abs=1e-6)
    assert sum(aff.values()) == pytest.approx(1.0)
    # a purchase says more than a view
    s = run(ev(ET.PRODUCT_VIEW, t=T0, category="a"), ev(ET.PURCHASE, t=T0, category="b"))
    aff = dict(fold.public_view(s, T0).category_affinity)
    assert aff["b"] > aff["a"]


def test_category_affinity_half_life_is_configurable_and_rescales() -> None:
    settings = fold.FoldSettings(affinity_half_life_ms=DAY_MS)
    s = run(ev(ET.CATEGORY_VIEW, t=T0, category="x"), ev(ET.CATEGORY_VIEW, t=T0 + DAY_MS, category="y"),
            settings=settings)
    aff = dict(fold.public_view(s, T0).category_affinity)
    assert aff["y"] == pytest.approx(2 / 3, abs=1e-6)
    # far later (past the rescale threshold) the numbers stay finite
    s = run(ev(ET.CATEGORY_VIEW, t=T0, category="x"), ev(ET.CATEGORY_VIEW, t=T0 + 400 * DAY_MS, category="y"),
            settings=settings)
    aff = dict(fold.public_view(s, T0).category_affinity)
    assert aff == {"y": 1.0}


def test_affinity_categories_are_bounded() -> None:
    s = run(*[ev(ET.CATEGORY_VIEW, t=T0 + i, category=f"c{i}") for i in range(C.AFFINITY_CATEGORIES + 10)])
    assert len(s.profile.category_affinity) == C.AFFINITY_CATEGORIES


def test_cart_add_remove_purchase() -> None:
    s = run(
        ev(ET.ADD_TO_CART, t=T0, product_id="a", price=5, quantity=2),
        ev(ET.ADD_TO_CART, t=T0 + 1, product_id="a", price=6),        # quantity 0 means 1
        ev(ET.ADD_TO_CART, t=T0 + 2, product_id="b", price=3),
        ev(ET.ADD_TO_CART, t=T0 + 3, product_id="c", price=1),
        ev(ET.REMOVE_FROM_CART, t=T0 + 4, product_id="a"),            # one unit
        ev(ET.REMOVE_FROM_CART, t=T0 + 5, product_id="c", quantity=5),  # more than there: the line goes
        ev(ET.PURCHASE, t=T0 + 6, product_id="b", price=3, order_id="o1"),
    )
    cart = {i.product_id: (i.quantity, i.price) for i in s.profile.cart}
    assert cart == {"a": (2, 6.0)}
    assert s.profile.last_cart_change_ms == T0 + 6


def test_cart_is_bounded() -> None:
    s = run(*[ev(ET.ADD_TO_CART, t=T0 + i, product_id=f"p{i}") for i in range(C.CART_ITEMS + 5)])
    assert len(s.profile.cart) == C.CART_ITEMS
    assert "p0" not in {i.product_id for i in s.profile.cart}


def test_purchases_orders_spend_and_averages() -> None:
    s = run(
        ev(ET.PAGE_VIEW, t=T0, session_id="v1"),
        ev(ET.PURCHASE, t=T0 + 1, session_id="v1", product_id="a", price=10, quantity=2, order_id="o1"),
        ev(ET.PURCHASE, t=T0 + 2, session_id="v1", product_id="b", price=5, order_id="o1"),  # same order
        ev(ET.PURCHASE, t=T0 + 3, session_id="v1", product_id="c", price=15, order_id="o2"),  # same visit
        ev(ET.PURCHASE, t=T0 + DAY_MS, session_id="v2", product_id="d", price=30, order_id="o3"),
        ev(ET.PAGE_VIEW, t=T0 + DAY_MS + 5, session_id="v3"),
    )
    p = s.profile
    assert p.purchase_count == 3           # orders, not lines
    assert p.total_spend == pytest.approx(70.0)
    assert p.avg_order_value == pytest.approx(70 / 3)
    assert p.purchase_sessions == 2        # visits with a purchase
    assert p.avg_session_spend == pytest.approx(35.0)
    assert p.last_purchase_ms == T0 + DAY_MS
    assert list(p.purchased_product_ids) == ["d", "c", "b", "a"]
    assert p.visit_count == 3


def test_checkout_and_coupon() -> None:
    s = run(ev(ET.CHECKOUT, t=T0), ev(ET.COUPON_APPLIED, t=T0 + 1, coupon="X"))
    assert s.profile.last_checkout_ms == T0 and s.profile.coupon_uses == 1


def test_first_and_last_context() -> None:
    first = common_pb2.Context(device_type="mobile", country="DE")
    last = common_pb2.Context(device_type="desktop", country="FR")
    s = run(ev(ET.PAGE_VIEW, t=T0, context=first), ev(ET.PAGE_VIEW, t=T0 + 1),
            ev(ET.PAGE_VIEW, t=T0 + 2, context=last))
    assert s.profile.first_context.device_type == "mobile"
    assert s.profile.last_context.country == "FR"


def test_daily_counts_and_windows() -> None:
    now = T0
    events = [ev(ET.PURCHASE, t=now - d * DAY_MS, order_id=f"o{d}") for d in (0, 3, 20, 60, 100)]
    events += [ev(ET.PAGE_VIEW, t=now - 2 * DAY_MS), ev(ET.PAGE_VIEW, t=now)]
    s = run(*events)
    counts = {c.type: c for c in fold.public_view(s, now).event_counts}
    purchases = counts[ET.PURCHASE]
    assert (purchases.last_1d, purchases.last_7d, purchases.last_30d, purchases.last_90d, purchases.total) == (
        1, 2, 3, 4, 5)
    assert counts[ET.PAGE_VIEW].last_7d == 2
    assert ET.SEARCH not in counts


def test_daily_counts_drop_old_days() -> None:
    s = run(ev(ET.PAGE_VIEW, t=T0), ev(ET.PAGE_VIEW, t=T0 + (C.DAILY_COUNT_DAYS + 5) * DAY_MS))
    assert [e.day for e in s.profile.daily_events] == [(T0 + (C.DAILY_COUNT_DAYS + 5) * DAY_MS) // DAY_MS]
    assert list(s.type_totals)[ET.PAGE_VIEW] == 2


def test_withdrawn_personalization_keeps_history_not_signals() -> None:
    s = run(ev(ET.PRODUCT_VIEW, t=T0, category="c"), ev(ET.SEARCH, t=T0 + 1),
            ev(ET.PURCHASE, t=T0 + 2, category="c"), flags=fold.FLAG_NO_PERSONALIZATION)
    p = s.profile
    assert not p.recently_viewed and not p.recent_searches and not p.category_affinity
    assert p.purchase_count == 1 and p.event_count == 3 and list(p.purchased_product_ids) == ["p1"]


def test_same_events_same_profile() -> None:
    events = [ev(k, t=T0 + i * MIN_MS, event_id=f"x{i}", category="c", order_id=f"o{i}")
              for i, k in enumerate([ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.PURCHASE, ET.SEARCH])]
    assert run(*events).SerializeToString(deterministic=True) == run(*events).SerializeToString(deterministic=True)


def test_merge_adds_counters_merges_lists_by_time_newer_context_wins() -> None:
    customer = run(ev(ET.PRODUCT_VIEW, t=T0, product_id="c1", category="x",
                      context=common_pb2.Context(device_type="desktop")),
                   ev(ET.PURCHASE, t=T0 + 1, product_id="c1", price=20, order_id="o1"))
    anon = fold.new_state("anon")
    for e in (ev(ET.PRODUCT_VIEW, user="anon", t=T0 + 10, product_id="a1", category="y",
                 context=common_pb2.Context(device_type="mobile")),
              ev(ET.PRODUCT_VIEW, user="anon", t=T0 - 10, product_id="a0"),
              ev(ET.ADD_TO_CART, user="anon", t=T0 + 11, product_id="a1", price=3),
              ev(ET.EMAIL_CLICK, user="anon", t=T0 + 12)):
        fold.apply_event(anon, e)
    fold.merge_into(customer, anon)
    p = customer.profile
    assert p.user_id == "u1"
    assert p.event_count == 6 and p.visit_count == 2 and p.purchase_count == 1 and p.email_clicks == 1
    assert list(p.recently_viewed) == ["a1", "c1", "a0"]
    assert p.first_seen_ms == T0 - 10 and p.last_seen_ms == T0 + 12
    assert p.last_context.device_type == "mobile" and p.first_context.device_type == "desktop"
    assert [i.product_id for i in p.cart] == ["a1"]
    assert set(p.category_affinity) == {"x", "y"}
    assert list(p.aliases) == ["anon"]
    assert list(customer.type_totals)[ET.PRODUCT_VIEW] == 3
    totals = {c.type: c.total for c in fold.public_view(customer, T0).event_counts}
    assert totals[ET.PRODUCT_VIEW] == 3


def test_merge_newer_consent_wins() -> None:
    customer, anon = fold.new_state("c"), fold.new_state("a")
    anon.profile.consent.personalization = False
    anon.profile.consent.updated_ms = T0
    fold.merge_into(customer, anon)
    assert not customer.profile.consent.personalization


def test_rfm_scores_against_population() -> None:
    sketch = RfmSketch()
    keys = [(T0 // DAY_MS - d, n, float(m)) for d, n, m in [(100, 1, 10), (50, 2, 50), (10, 3, 100),
                                                             (5, 5, 500), (1, 10, 2000)]]
    sketch.commit(sketch.pending([(None, k) for k in keys]))
    best = run(*[ev(ET.PURCHASE, t=T0 - DAY_MS, order_id=f"o{i}", price=200) for i in range(10)])
    rfm = fold.public_view(best, T0, sketch.score).rfm
    assert (rfm.frequency, rfm.monetary, rfm.r_score, rfm.f_score, rfm.m_score) == (10, 2000.0, 5, 5, 5)
    assert rfm.recency_days == pytest.approx(1.0)
    worst = run(ev(ET.PURCHASE, t=T0 - 100 * DAY_MS, price=10))
    rfm = fold.public_view(worst, T0, sketch.score).rfm
    assert (rfm.r_score, rfm.f_score, rfm.m_score) == (1, 1, 1)
    never = fold.public_view(run(ev(ET.PAGE_VIEW, t=T0)), T0, sketch.score).rfm
    assert (never.recency_days, never.frequency, never.r_score) == (-1.0, 0, 1)
    # moving a buyer between buckets keeps the population size
    sketch.commit(sketch.pending([(keys[0], (T0 // DAY_MS, 2, 30.0))]))
    assert sketch.total == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": 0}, "event.type"),
        ({"user_id": ""}, "event.user_id is required"),
        ({"product_id": ""}, "event.product_id is required for PURCHASE"),
        ({"order_id": ""}, "event.order_id is required for PURCHASE"),
        ({"price": 0.0}, "event.price is required for PURCHASE"),
        ({"price": -1.0}, "event.price"),
        ({"price": float("nan")}, "event.price"),
        ({"quantity": -2}, "event.quantity"),
        ({"timestamp_ms": T0 + 10 * MIN_MS}, "in the future"),
        ({"timestamp_ms": T0 - 500 * DAY_MS}, "retention window"),
        ({"user_id": "x" * 200}, "at most 128"),
        ({"user_id": "a\x00b"}, "control characters"),
        ({"category": "c" * 300}, "event.category"),
    ],
)
def test_validation_names_field_and_rule(change: dict[str, object], message: str) -> None:
    from services.common.errors import InvalidArgument

    event = ev(ET.PURCHASE, t=T0)
    for key, value in change.items():
        setattr(event, key, value)
    with pytest.raises(InvalidArgument, match=message):
        validate_event(event, T0, 400)


def test_validation_fills_time_and_id_and_checks_type_rules() -> None:
    from services.common.errors import InvalidArgument

    event = common_pb2.Event(user_id="u", type=ET.PAGE_VIEW)
    validate_event(event, T0, 400)
    assert event.timestamp_ms == T0 and event.event_id
    for kind, field, text in [(ET.SEARCH, "query", "event.query is required for SEARCH"),
                              (ET.PRODUCT_VIEW, "product_id", "event.product_id is required for PRODUCT_VIEW"),
                              (ET.CATEGORY_VIEW, "category", "event.category is required for CATEGORY_VIEW")]:
        event = ev(kind, t=T0)
        setattr(event, field, "")
        with pytest.raises(InvalidArgument, match=text):
            validate_event(event, T0, 400)
    event = ev(ET.PAGE_VIEW, t=T0, context=common_pb2.Context(screen_width=-1))
    with pytest.raises(InvalidArgument, match=r"event\.context\.screen_width"):
        validate_event(event, T0, 400)


_kinds = st.sampled_from([ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.CATEGORY_VIEW, ET.SEARCH, ET.ADD_TO_CART,
                          ET.REMOVE_FROM_CART, ET.CHECKOUT, ET.PURCHASE, ET.EMAIL_OPEN, ET.EMAIL_CLICK])
_events = st.lists(
    st.tuples(_kinds, st.integers(0, 40 * DAY_MS), st.integers(0, 30), st.integers(0, 3), st.integers(0, 5),
              st.integers(1, 1000)),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(_events)
def test_fold_invariants(raw: list[tuple[int, int, int, int, int, int]]) -> None:
    events = [ev(kind, t=T0 + dt, product_id=f"p{prod}", category=f"c{prod % 4}", session_id=f"s{sess}",
                 quantity=qty, price=float(price), order_id=f"o{prod}-{dt}", query=f"q{prod}")
              for kind, dt, prod, sess, qty, price in raw]
    state = run(*events)
    p = state.profile
    assert p.event_count == len(events)
    assert sum(state.type_totals) == len(events)
    purchases = [e for e in events if e.type == ET.PURCHASE]
    assert p.total_spend == pytest.approx(sum(e.price * (e.quantity or 1) for e in purchases))
    assert p.purchase_count <= len(purchases) and (p.purchase_count > 0) == bool(purchases)
    assert len(set(p.recently_viewed)) == len(p.recently_viewed) <= C.RECENTLY_VIEWED_LENGTH
    assert list(state.recently_viewed_ms) == sorted(state.recently_viewed_ms, reverse=True)
    assert all(item.quantity > 0 for item in p.cart)
    assert len({item.product_id for item in p.cart}) == len(p.cart)
    on_site = [e for e in events if e.type != ET.EMAIL_OPEN]
    assert (p.visit_count > 0) == bool(on_site) and p.visit_count <= len(on_site)
    days = [(e.day, e.type) for e in p.daily_events]
    assert len(days) == len(set(days)) and [d for d, _ in days] == sorted(d for d, _ in days)
    if events and max(e.timestamp_ms for e in events) - min(e.timestamp_ms for e in events) < 90 * DAY_MS:
        assert sum(e.count for e in p.daily_events) == len(events)
    shares = fold.public_view(state, T0 + 40 * DAY_MS).category_affinity
    assert not shares or sum(shares.values()) == pytest.approx(1.0, abs=1e-4)


@settings(max_examples=40, deadline=None)
@given(_events, _events)
def test_merge_adds_counters(raw_a: list[tuple[int, ...]], raw_b: list[tuple[int, ...]]) -> None:
    def build(raw: list[tuple[int, ...]], user: str) -> object:
        state = fold.new_state(user)
        for kind, dt, prod, sess, qty, price in raw:
            fold.apply_event(state, ev(kind, user=user, t=T0 + dt, product_id=f"p{prod}", session_id=f"s{sess}",
                                       quantity=qty, price=float(price), order_id=f"{user}{prod}-{dt}"))
        return state

    a, b = build(raw_a, "a"), build(raw_b, "b")
    expected = (a.profile.event_count + b.profile.event_count, a.profile.purchase_count + b.profile.purchase_count,
                a.profile.visit_count + b.profile.visit_count)
    spend = a.profile.total_spend + b.profile.total_spend
    fold.merge_into(a, b)
    assert (a.profile.event_count, a.profile.purchase_count, a.profile.visit_count) == expected
    assert a.profile.total_spend == pytest.approx(spend)
    assert sum(a.type_totals) == expected[0]
    assert len(set(a.profile.recently_viewed)) == len(a.profile.recently_viewed) <= C.RECENTLY_VIEWED_LENGTH


def test_merge_keeps_the_current_buying_visit() -> None:
    customer = run(ev(ET.PURCHASE, t=T0, session_id="v", order_id="o1", price=10))
    anon = fold.new_state("anon")
    fold.apply_event(anon, ev(ET.PAGE_VIEW, user="anon", t=T0 - DAY_MS, session_id="old"))
    fold.merge_into(customer, anon)
    # a second order in the same (customer's current) visit is not a new buying visit
    fold.apply_event(customer, ev(ET.PURCHASE, t=T0 + MIN_MS, session_id="v", order_id="o2", price=10))
    assert customer.profile.purchase_sessions == 1 and customer.profile.avg_session_spend == 20.0
