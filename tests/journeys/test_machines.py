"""Each journey kind's state machine, driven directly with constructed feed items."""

from __future__ import annotations

from services.journeys.machines import (
    CANCEL,
    ENTER,
    NONE,
    UPDATE,
    WAITING,
    JourneyState,
    ProductInfo,
    Watch,
    machine_for,
)
from tests.journeys.helpers import DAY_MS, ET, HOUR_MS, JK, MIN_MS, T0, change, event, journey
from vitrine.v1 import profile_pb2


def waiting(state: JourneyState, due: int) -> JourneyState:
    """What the engine does on ENTER."""
    state.status, state.due_ms, state.entry = WAITING, due, state.entry + 1
    return state


def test_abandoned_cart_enters_moves_and_exits() -> None:
    m = machine_for(journey(JK.ABANDONED_CART, delay_ms=HOUR_MS))
    s = JourneyState()
    step = m.on_event(s, event(ET.ADD_TO_CART, T0, product="a"))
    assert (step.action, step.due_ms) == (ENTER, T0 + HOUR_MS)
    waiting(s, step.due_ms)
    step = m.on_event(s, event(ET.ADD_TO_CART, T0 + MIN_MS, product="b"))
    assert (step.action, step.due_ms) == (UPDATE, T0 + MIN_MS + HOUR_MS)   # from the last cart change
    assert s.products == ["b", "a"]
    assert m.on_event(s, event(ET.PURCHASE, T0 + 2 * MIN_MS, product="a")).action == NONE  # b still in cart
    step = m.on_event(s, event(ET.PURCHASE, T0 + 3 * MIN_MS, product="b"))
    assert (step.action, step.reason) == (CANCEL, "purchased")


def test_abandoned_cart_emptied() -> None:
    m = machine_for(journey(JK.ABANDONED_CART))
    s = JourneyState()
    waiting(s, m.on_event(s, event(ET.ADD_TO_CART, product="a")).due_ms)
    step = m.on_event(s, event(ET.REMOVE_FROM_CART, product="a"))
    assert (step.action, step.reason) == (CANCEL, "cart_emptied")


def test_abandoned_cart_ignores_unrelated_purchase() -> None:
    m = machine_for(journey(JK.ABANDONED_CART))
    s = JourneyState()
    waiting(s, m.on_event(s, event(ET.ADD_TO_CART, product="a")).due_ms)
    assert m.on_event(s, event(ET.PURCHASE, product="z")).action == NONE


def test_browse_abandonment_due_after_visit_end_and_cancelled_by_cart() -> None:
    m = machine_for(journey(JK.BROWSE_ABANDONMENT, delay_ms=HOUR_MS))
    s = JourneyState()
    step = m.on_event(s, event(ET.PRODUCT_VIEW, T0, product="a"))
    assert (step.action, step.due_ms) == (ENTER, T0 + 30 * MIN_MS + HOUR_MS)
    waiting(s, step.due_ms)
    step = m.on_event(s, event(ET.PAGE_VIEW, T0 + 10 * MIN_MS))
    assert (step.action, step.due_ms) == (UPDATE, T0 + 40 * MIN_MS + HOUR_MS)   # the visit goes on
    step = m.on_event(s, event(ET.ADD_TO_CART, T0 + 11 * MIN_MS, product="a"))
    assert (step.action, step.reason) == (CANCEL, "added_to_cart")
    s.status = "idle"
    # More views in that same visit do not start it again; a new visit does.
    assert m.on_event(s, event(ET.PRODUCT_VIEW, T0 + 12 * MIN_MS, product="b")).action == NONE
    assert m.on_event(s, event(ET.PRODUCT_VIEW, T0 + DAY_MS, product="b", session_id="s2")).action == ENTER


def test_browse_abandonment_visit_timeout_param() -> None:
    m = machine_for(journey(JK.BROWSE_ABANDONMENT, delay_ms=0, params={"visit_timeout_minutes": "10"}))
    assert m.on_event(JourneyState(), event(ET.PRODUCT_VIEW, T0)).due_ms == T0 + 10 * MIN_MS


def test_post_purchase_joins_lines_of_one_order() -> None:
    m = machine_for(journey(JK.POST_PURCHASE, delay_ms=DAY_MS))
    s = JourneyState()
    step = m.on_event(s, event(ET.PURCHASE, T0, product="a", order_id="o1"))
    assert (step.action, step.due_ms) == (ENTER, T0 + DAY_MS)
    waiting(s, step.due_ms)
    assert m.on_event(s, event(ET.PURCHASE, T0 + 1, product="b", order_id="o1")).action == NONE
    assert s.products == ["b", "a"]
    step = m.on_event(s, event(ET.PURCHASE, T0 + HOUR_MS, product="c", order_id="o2"))
    assert (step.action, step.due_ms) == (UPDATE, T0 + HOUR_MS + DAY_MS)


def test_welcome_once_per_customer() -> None:
    m = machine_for(journey(JK.WELCOME, delay_ms=0))
    s = JourneyState()
    ident = profile_pb2.Identity(anonymous_id="a", customer_id="c", identified_ms=T0, first_registration=True)
    step = m.on_identity(s, ident)
    assert (step.action, step.due_ms) == (ENTER, T0)
    waiting(s, T0)
    s.status = "idle"       # sent
    assert m.on_identity(s, ident).action == NONE
    assert m.on_event(s, event(ET.PURCHASE)).action == NONE


def test_win_back_moves_with_every_purchase() -> None:
    m = machine_for(journey(JK.WIN_BACK, delay_ms=0, params={"days": "60"}))
    s = JourneyState()
    step = m.on_event(s, event(ET.PURCHASE, T0))
    assert (step.action, step.due_ms) == (ENTER, T0 + 60 * DAY_MS)
    waiting(s, step.due_ms)
    step = m.on_event(s, event(ET.PURCHASE, T0 + 10 * DAY_MS))
    assert (step.action, step.due_ms) == (UPDATE, T0 + 70 * DAY_MS)
    assert m.on_event(s, event(ET.PURCHASE, T0 + DAY_MS)).action == NONE   # older purchase replayed late


def test_back_in_stock_watches_only_out_of_stock_products() -> None:
    m = machine_for(journey(JK.BACK_IN_STOCK, delay_ms=0))
    view = event(ET.PRODUCT_VIEW, T0, product="a")
    assert m.watch(view, ProductInfo(stock=3, price=10)) is None
    assert m.watch(view, None) is None
    watch = m.watch(view, ProductInfo(stock=0, price=10))
    assert watch == Watch(T0)
    s = JourneyState()
    assert m.on_catalog(s, change("a", stock=0, previous_stock=0, t=T0 + 1), watch).action == NONE
    step = m.on_catalog(s, change("a", stock=4, previous_stock=0, t=T0 + HOUR_MS), watch)
    assert (step.action, step.due_ms) == (ENTER, T0 + HOUR_MS)
    assert s.products == ["a"]
    # A watch older than watch_days no longer counts.
    assert m.on_catalog(JourneyState(), change("a", stock=4, previous_stock=0, t=T0 + 31 * DAY_MS),
                        watch).action == NONE


def test_back_in_stock_cancelled_by_purchase() -> None:
    m = machine_for(journey(JK.BACK_IN_STOCK))
    s = JourneyState()
    waiting(s, m.on_catalog(s, change("a", stock=4, previous_stock=0), Watch(T0)).due_ms)
    assert m.unwatch(event(ET.PURCHASE, product="a"))
    step = m.on_event(s, event(ET.PURCHASE, product="a"))
    assert (step.action, step.reason) == (CANCEL, "purchased")


def test_price_drop_needs_the_share() -> None:
    m = machine_for(journey(JK.PRICE_DROP, delay_ms=0, params={"min_drop": "0.2"}))
    watch = m.watch(event(ET.PRODUCT_VIEW, T0, product="a", price=100.0), None)
    assert watch == Watch(T0, 100.0)
    assert m.on_catalog(JourneyState(), change("a", price=85.0, previous_price=100.0), watch).action == NONE
    s = JourneyState()
    step = m.on_catalog(s, change("a", price=80.0, previous_price=85.0, t=T0 + 5), watch)
    assert (step.action, step.due_ms) == (ENTER, T0 + 5)
    assert s.reference_price == 100.0
    # Without a price on the event, the catalog's known price is the reference.
    assert m.watch(event(ET.ADD_TO_CART, T0, product="b"), ProductInfo(3, 50.0)) == Watch(T0, 50.0)


def test_engaged_no_purchase() -> None:
    m = machine_for(journey(JK.ENGAGED_NO_PURCHASE, delay_ms=0, params={"opens": "2", "clicks": "1", "days": "7"}))
    s = JourneyState()
    assert m.on_event(s, event(ET.EMAIL_OPEN, T0)).action == NONE
    assert m.on_event(s, event(ET.EMAIL_CLICK, T0 + 1)).action == NONE
    step = m.on_event(s, event(ET.EMAIL_OPEN, T0 + 2))
    assert (step.action, step.due_ms) == (ENTER, T0 + 2)
    waiting(s, step.due_ms)
    step = m.on_event(s, event(ET.PURCHASE, T0 + 3))
    assert (step.action, step.reason) == (CANCEL, "purchased")


def test_engaged_no_purchase_window_and_recent_purchase() -> None:
    m = machine_for(journey(JK.ENGAGED_NO_PURCHASE, params={"days": "7"}))
    s = JourneyState()
    m.on_event(s, event(ET.EMAIL_OPEN, T0))
    m.on_event(s, event(ET.EMAIL_CLICK, T0))
    # The first open fell out of the window: only one open inside it.
    assert m.on_event(s, event(ET.EMAIL_OPEN, T0 + 8 * DAY_MS)).action == NONE
    s2 = JourneyState(last_purchase_ms=T0)
    for kind in (ET.EMAIL_OPEN, ET.EMAIL_CLICK, ET.EMAIL_OPEN):
        assert m.on_event(s2, event(kind, T0 + DAY_MS)).action == NONE   # bought within the window


def test_state_round_trip_is_compact() -> None:
    s = JourneyState(status=WAITING, entry=2, due_ms=5, products=["a"])
    raw = s.to_bytes()
    assert JourneyState.from_bytes(raw) == s
    assert len(JourneyState().to_bytes()) == 2   # "{}": defaults are not stored
