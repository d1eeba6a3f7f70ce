"""The eight journey kinds as small pure state machines.

A machine is built once per journey definition (its params parsed then) and drives one
shopper's `JourneyState` for that journey: given a feed item it mutates the state and says
what the engine must do (`Step`): enter the journey with a due time, move the due time,
cancel (an exit condition held) or nothing. Machines never touch storage, clocks or the
network; the engine (engine.py) applies re-entry rules, timers and sending, and the catalog
lookups of back-in-stock and price-drop (`Watch`).
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping

from services.journeys import config as C
from vitrine.v1 import common_pb2, journey_pb2, profile_pb2, recommend_pb2

# Plain attribute namespaces: reading an enum value through the protobuf EnumTypeWrapper costs a
# __getattr__ call per comparison, which showed in the feed benchmark.
ET = types.SimpleNamespace(**dict(common_pb2.EventType.items()))
JK = journey_pb2.JourneyKind
S = recommend_pb2.Strategy

IDLE = "idle"
WAITING = "waiting"

NONE = "none"
ENTER = "enter"      # start waiting (only from IDLE; the engine checks re-entry)
UPDATE = "update"    # move the due time of a waiting state
CANCEL = "cancel"    # an exit condition: stop waiting, nothing is sent


@dataclasses.dataclass
class JourneyState:
    """One shopper in one journey. Serialized as compact JSON in the `states` database."""

    status: str = IDLE
    entry: int = 0                 # entries so far; (journey, user, entry) names the message
    entered_ms: int = 0
    due_ms: int = 0
    last_sent_ms: int = 0
    products: list[str] = dataclasses.field(default_factory=list)   # cart / viewed / bought / triggered
    session_id: str = ""
    closed_session: str = ""       # browse abandonment: a visit that already ended the journey
    order_id: str = ""
    last_purchase_ms: int = 0
    opens: list[int] = dataclasses.field(default_factory=list)
    clicks: list[int] = dataclasses.field(default_factory=list)
    reference_price: float = 0.0   # price drop: the price the shopper saw
    source: int = 0                # profile shard whose feed the shopper came from (profile lookups)

    def to_bytes(self) -> bytes:
        # vars(), not dataclasses.asdict(): asdict deep-copies every list (most of a feed item's cost).
        data = {k: v for k, v in vars(self).items() if v != _DEFAULTS[k]}
        return _encode(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> JourneyState:
        if not raw:
            return cls()
        return cls(**json.loads(raw))

    def copy(self) -> JourneyState:
        return dataclasses.replace(self, products=list(self.products), opens=list(self.opens),
                                   clicks=list(self.clicks))


_DEFAULTS = dataclasses.asdict(JourneyState())
DEFAULT_STATE = JourneyState()
_encode = json.JSONEncoder(separators=(",", ":")).encode   # one encoder: json.dumps builds one per call


@dataclasses.dataclass(frozen=True)
class Step:
    action: str = NONE
    due_ms: int = 0
    reason: str = ""


NOTHING = Step()


@dataclasses.dataclass(frozen=True)
class Watch:
    """A shopper watching a product for back-in-stock or price-drop (kept per product)."""

    added_ms: int
    price: float = 0.0
    source: int = 0                # profile shard of the shopper


@dataclasses.dataclass(frozen=True)
class ProductInfo:
    """What the catalog feed told us of a product."""

    stock: int
    price: float


def _add(products: list[str], product_id: str) -> None:
    if product_id in products:
        products.remove(product_id)
    products.insert(0, product_id)
    del products[C.MAX_STATE_PRODUCTS:]


def _param(params: Mapping[str, str], name: str, default: float) -> float:
    raw = params.get(name, "")
    return float(raw) if raw else default


class Machine:
    """Base: reacts to nothing. Subclasses set `event_types` and override what they use."""

    kind: journey_pb2.JourneyKind.ValueType = JK.JOURNEY_KIND_UNSPECIFIED
    event_types: frozenset[common_pb2.EventType.ValueType] = frozenset()
    default_strategy: recommend_pb2.Strategy.ValueType = S.FOR_YOU
    reentry_at_entry = True        # refuse an entry within reentry_days of the last send
    watches_catalog = False
    param_names: tuple[str, ...] = ()

    def __init__(self, journey: journey_pb2.Journey) -> None:
        self.journey = journey
        self.delay_ms = journey.delay_ms

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        return NOTHING

    def on_identity(self, state: JourneyState, identity: profile_pb2.Identity) -> Step:
        return NOTHING

    def watch(self, event: common_pb2.Event, known: ProductInfo | None) -> Watch | None:
        """Back in stock / price drop: should this event start watching event.product_id?"""
        return None

    def unwatch(self, event: common_pb2.Event) -> bool:
        """Should this event stop watching event.product_id (the shopper bought it)?"""
        return False

    def on_catalog(self, state: JourneyState, change: recommend_pb2.CatalogChange, watch: Watch) -> Step:
        return NOTHING

    def fresh(self, watch: Watch, now_ms: int) -> bool:
        """Does a watch still count at now_ms?"""
        return True

    def reset(self, state: JourneyState) -> None:
        """After a send, cancel or suppression: forget what belonged to that entry."""
        state.products = []
        state.order_id = ""
        state.reference_price = 0.0

    def _enter_or_update(self, state: JourneyState, due_ms: int) -> Step:
        return Step(UPDATE if state.status == WAITING else ENTER, due_ms)


class AbandonedCart(Machine):
    """An add-to-cart with no purchase within the delay (from the last cart change). Exits: the
    carted items bought, or the cart emptied."""

    kind = JK.ABANDONED_CART
    event_types = frozenset({ET.ADD_TO_CART, ET.REMOVE_FROM_CART, ET.PURCHASE})
    default_strategy = S.CART_COMPLEMENTS

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        if event.type == ET.ADD_TO_CART:
            _add(state.products, event.product_id)
            return self._enter_or_update(state, event.timestamp_ms + self.delay_ms)
        if event.product_id in state.products:
            state.products.remove(event.product_id)
        if state.status == WAITING and not state.products:
            return Step(CANCEL, reason="purchased" if event.type == ET.PURCHASE else "cart_emptied")
        return NOTHING


class BrowseAbandonment(Machine):
    """Product views in a visit without an add-to-cart: due when the visit ends (no activity for
    VISIT_TIMEOUT_MS, param `visit_timeout_minutes`) plus the delay. Exits: an add-to-cart or a
    purchase in that visit."""

    kind = JK.BROWSE_ABANDONMENT
    event_types = frozenset({ET.PRODUCT_VIEW, ET.PAGE_VIEW, ET.CATEGORY_VIEW, ET.SEARCH, ET.ADD_TO_CART,
                             ET.PURCHASE})
    default_strategy = S.SIMILAR
    param_names = ("visit_timeout_minutes",)

    def __init__(self, journey: journey_pb2.Journey) -> None:
        super().__init__(journey)
        self.visit_ms = int(_param(journey.params, "visit_timeout_minutes", C.VISIT_TIMEOUT_MS / C.MINUTE_MS)
                            * C.MINUTE_MS)

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        due = event.timestamp_ms + self.visit_ms + self.delay_ms
        if event.type in (ET.ADD_TO_CART, ET.PURCHASE):
            state.closed_session = event.session_id or state.session_id
            if state.status == WAITING:
                return Step(CANCEL, reason="added_to_cart" if event.type == ET.ADD_TO_CART else "purchased")
            return NOTHING
        if event.type == ET.PRODUCT_VIEW:
            if state.status != WAITING and event.session_id and event.session_id == state.closed_session:
                return NOTHING
            _add(state.products, event.product_id)
            state.session_id = event.session_id
            return self._enter_or_update(state, due)
        # Other activity keeps the visit going.
        return Step(UPDATE, due) if state.status == WAITING else NOTHING


class PostPurchase(Machine):
    """A purchase: after the delay, a message with items that go with what was bought (the lines of
    one order join one message)."""

    kind = JK.POST_PURCHASE
    event_types = frozenset({ET.PURCHASE})
    default_strategy = S.BOUGHT_TOGETHER

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        same_order = state.status == WAITING and event.order_id == state.order_id
        _add(state.products, event.product_id)
        if same_order:
            return NOTHING
        state.order_id = event.order_id
        return self._enter_or_update(state, event.timestamp_ms + self.delay_ms)


class Welcome(Machine):
    """The first registration or identify of a customer; once per customer."""

    kind = JK.WELCOME
    default_strategy = S.TRENDING
    reentry_at_entry = False

    def on_identity(self, state: JourneyState, identity: profile_pb2.Identity) -> Step:
        if state.entry or state.status == WAITING:
            return NOTHING
        return Step(ENTER, identity.identified_ms + self.delay_ms)


class WinBack(Machine):
    """A past customer with no purchase for `days` (default 90): due `days` after the last purchase
    (plus the delay); every purchase moves it."""

    kind = JK.WIN_BACK
    event_types = frozenset({ET.PURCHASE})
    default_strategy = S.FOR_YOU
    reentry_at_entry = False
    param_names = ("days",)

    def __init__(self, journey: journey_pb2.Journey) -> None:
        super().__init__(journey)
        self.quiet_ms = int(_param(journey.params, "days", C.DEFAULT_WIN_BACK_DAYS) * C.DAY_MS)

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        if event.timestamp_ms < state.last_purchase_ms:
            return NOTHING      # an older purchase replayed late: the newest one counts
        state.last_purchase_ms = event.timestamp_ms
        return self._enter_or_update(state, event.timestamp_ms + self.quiet_ms + self.delay_ms)


class _CatalogWatcher(Machine):
    """Shared by back-in-stock and price-drop: a view or add-to-cart watches the product for
    `watch_days` (default 30); buying it stops the watch."""

    event_types = frozenset({ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.PURCHASE})
    default_strategy = S.SIMILAR
    watches_catalog = True
    param_names: tuple[str, ...] = ("watch_days",)

    def __init__(self, journey: journey_pb2.Journey) -> None:
        super().__init__(journey)
        self.watch_ms = int(_param(journey.params, "watch_days", C.DEFAULT_WATCH_DAYS) * C.DAY_MS)

    def unwatch(self, event: common_pb2.Event) -> bool:
        return event.type == ET.PURCHASE

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        if event.type != ET.PURCHASE or event.product_id not in state.products:
            return NOTHING
        state.products.remove(event.product_id)
        return Step(CANCEL, reason="purchased") if state.status == WAITING and not state.products else NOTHING

    def fresh(self, watch: Watch, now_ms: int) -> bool:
        return now_ms - watch.added_ms <= self.watch_ms

    def _trigger(self, state: JourneyState, change: recommend_pb2.CatalogChange) -> Step:
        _add(state.products, change.product_id)
        return self._enter_or_update(state, change.changed_ms + self.delay_ms)


class BackInStock(_CatalogWatcher):
    """A viewed or carted product that was out of stock comes back (stock 0 -> more)."""

    kind = JK.BACK_IN_STOCK

    def watch(self, event: common_pb2.Event, known: ProductInfo | None) -> Watch | None:
        if event.type not in (ET.PRODUCT_VIEW, ET.ADD_TO_CART) or known is None or known.stock > 0:
            return None
        return Watch(event.timestamp_ms)

    def on_catalog(self, state: JourneyState, change: recommend_pb2.CatalogChange, watch: Watch) -> Step:
        if change.previous_stock > 0 or change.stock <= 0 or not self.fresh(watch, change.changed_ms):
            return NOTHING
        return self._trigger(state, change)


class PriceDrop(_CatalogWatcher):
    """A viewed or carted product whose price falls at least `min_drop` (default 0.10) below the
    price the shopper saw."""

    kind = JK.PRICE_DROP
    param_names = ("watch_days", "min_drop")

    def __init__(self, journey: journey_pb2.Journey) -> None:
        super().__init__(journey)
        self.share = _param(journey.params, "min_drop", C.DEFAULT_PRICE_DROP_SHARE)

    def watch(self, event: common_pb2.Event, known: ProductInfo | None) -> Watch | None:
        if event.type not in (ET.PRODUCT_VIEW, ET.ADD_TO_CART):
            return None
        price = event.price or (known.price if known else 0.0)
        return Watch(event.timestamp_ms, price)

    def threshold(self, reference: float) -> float:
        return reference * (1.0 - self.share)

    def on_catalog(self, state: JourneyState, change: recommend_pb2.CatalogChange, watch: Watch) -> Step:
        reference = watch.price or change.previous_price
        if change.price <= 0 or reference <= 0 or not self.fresh(watch, change.changed_ms):
            return NOTHING
        if change.price > self.threshold(reference):
            return NOTHING
        state.reference_price = reference
        return self._trigger(state, change)


class EngagedNoPurchase(Machine):
    """At least `opens` e-mail opens (default 2) and `clicks` clicks (default 1) within `days`
    (default 14) with no purchase in that window. Exit: a purchase."""

    kind = JK.ENGAGED_NO_PURCHASE
    event_types = frozenset({ET.EMAIL_OPEN, ET.EMAIL_CLICK, ET.PURCHASE})
    default_strategy = S.FOR_YOU
    param_names = ("days", "opens", "clicks")

    def __init__(self, journey: journey_pb2.Journey) -> None:
        super().__init__(journey)
        self.window_ms = int(_param(journey.params, "days", C.DEFAULT_ENGAGED_DAYS) * C.DAY_MS)
        self.opens = int(_param(journey.params, "opens", C.DEFAULT_ENGAGED_OPENS))
        self.clicks = int(_param(journey.params, "clicks", C.DEFAULT_ENGAGED_CLICKS))

    def on_event(self, state: JourneyState, event: common_pb2.Event) -> Step:
        t = event.timestamp_ms
        if event.type == ET.PURCHASE:
            state.last_purchase_ms = max(state.last_purchase_ms, t)
            state.opens, state.clicks = [], []
            return Step(CANCEL, reason="purchased") if state.status == WAITING else NOTHING
        marks = state.opens if event.type == ET.EMAIL_OPEN else state.clicks
        marks.append(t)
        since = t - self.window_ms
        state.opens = [m for m in state.opens if m >= since][-C.MAX_ENGAGEMENT_MARKS:]
        state.clicks = [m for m in state.clicks if m >= since][-C.MAX_ENGAGEMENT_MARKS:]
        if state.status == WAITING or state.last_purchase_ms >= since:
            return NOTHING
        if len(state.opens) >= self.opens and len(state.clicks) >= self.clicks:
            return Step(ENTER, t + self.delay_ms)
        return NOTHING

    def reset(self, state: JourneyState) -> None:
        super().reset(state)
        state.opens, state.clicks = [], []


MACHINES: dict[journey_pb2.JourneyKind.ValueType, type[Machine]] = {
    JK.ABANDONED_CART: AbandonedCart,
    JK.BROWSE_ABANDONMENT: BrowseAbandonment,
    JK.POST_PURCHASE: PostPurchase,
    JK.WELCOME: Welcome,
    JK.WIN_BACK: WinBack,
    JK.BACK_IN_STOCK: BackInStock,
    JK.PRICE_DROP: PriceDrop,
    JK.ENGAGED_NO_PURCHASE: EngagedNoPurchase,
}

# Params every kind understands (see README.md).
COMMON_PARAMS = ("channel", "skip_frequency_cap", "skip_quiet_hours")


def machine_for(journey: journey_pb2.Journey) -> Machine:
    return MACHINES[journey.kind](journey)
