"""The rule schema of Vitrine profiles, and how each rule access reads a Profile/Context message.

`SCHEMA` lists every field a rule may name. `ProfileRecord` is the record a compiled
rule reads for one shopper: it resolves each access from the protobufs on first use and
caches it, so 100 rules reading `visit_count` read it once. The meaning of each access
is the one of `scoring.rules.plain` (tests check the two agree).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from scoring.rules import NOW_KEY, VT, Access, ColumnBatch, FieldType, Schema
from scoring.rules.daily import WindowPlan
from scoring.rules.vector import to_column
from services.segmentation.config import MAX_EVENT_DAYS
from vitrine.v1 import common_pb2

DAY_MS = 86_400_000
KERNEL_MIN_COUNTERS = 16   # more daily counters than this: sum windows with the compiled kernel

_CONTEXT_FIELDS: dict[str, FieldType] = {
    "device_type": FieldType.STRING, "os": FieldType.STRING, "browser": FieldType.STRING,
    "screen_width": FieldType.NUMBER, "screen_height": FieldType.NUMBER, "country": FieldType.STRING,
    "region": FieldType.STRING, "city": FieldType.STRING, "language": FieldType.STRING,
    "currency": FieldType.STRING, "traffic_source": FieldType.STRING, "referrer": FieldType.STRING,
    "utm.source": FieldType.STRING, "utm.medium": FieldType.STRING, "utm.campaign": FieldType.STRING,
    "utm.term": FieldType.STRING, "utm.content": FieldType.STRING, "ip_country": FieldType.STRING,
}

_PROFILE_FIELDS: dict[str, FieldType] = {
    "user_id": FieldType.STRING,
    "customer_id": FieldType.STRING,
    "registered": FieldType.BOOL,
    "first_seen_ms": FieldType.TIMESTAMP,
    "last_seen_ms": FieldType.TIMESTAMP,
    "visit_count": FieldType.NUMBER,
    "event_count": FieldType.NUMBER,
    "recently_viewed": FieldType.STRING_LIST,
    "category_affinity": FieldType.NUMBER_MAP,
    "purchase_count": FieldType.NUMBER,
    "total_spend": FieldType.NUMBER,
    "avg_order_value": FieldType.NUMBER,
    "avg_session_spend": FieldType.NUMBER,
    "last_purchase_ms": FieldType.TIMESTAMP,
    "purchased_product_ids": FieldType.STRING_LIST,
    "rfm.recency_days": FieldType.NUMBER,
    "rfm.frequency": FieldType.NUMBER,
    "rfm.monetary": FieldType.NUMBER,
    "rfm.r_score": FieldType.NUMBER,
    "rfm.f_score": FieldType.NUMBER,
    "rfm.m_score": FieldType.NUMBER,
    "email_opens": FieldType.NUMBER,
    "email_clicks": FieldType.NUMBER,
    "consent.personalization": FieldType.BOOL,
    "consent.marketing": FieldType.BOOL,
    "consent.analytics": FieldType.BOOL,
    "consent.updated_ms": FieldType.TIMESTAMP,
    "traits": FieldType.STRING_MAP,
    "last_session_id": FieldType.STRING,
    "last_cart_change_ms": FieldType.TIMESTAMP,
    "last_checkout_ms": FieldType.TIMESTAMP,
    "purchase_sessions": FieldType.NUMBER,
    "recent_searches": FieldType.STRING_LIST,
    "last_email_click_ms": FieldType.TIMESTAMP,
    "coupon_uses": FieldType.NUMBER,
    # Derived from Profile.cart.
    "cart_size": FieldType.NUMBER,          # items in the cart (sum of quantities; quantity 0 counts 1)
    "cart_value": FieldType.NUMBER,         # sum of price x quantity
    "cart_product_ids": FieldType.STRING_LIST,
    **{f"first_context.{k}": v for k, v in _CONTEXT_FIELDS.items()},
    **{f"last_context.{k}": v for k, v in _CONTEXT_FIELDS.items()},
}

EVENT_TYPES = frozenset(v.name for v in common_pb2.EventType.DESCRIPTOR.values if v.number != 0)

SCHEMA = Schema(
    fields={**_PROFILE_FIELDS, **{f"context.{k}": v for k, v in _CONTEXT_FIELDS.items()}},
    event_types=EVENT_TYPES,
    max_event_days=MAX_EVENT_DAYS,
)

_DAILY_FIELD = common_pb2.Profile.DESCRIPTOR.fields_by_name["daily_events"].number
_DAILY_FIELDS = {f.name: f.number for f in common_pb2.DailyEventCount.DESCRIPTOR.fields}


def _quantity(item: common_pb2.CartItem) -> int:
    return item.quantity if item.quantity > 0 else 1


class ProfileRecord(dict):  # type: ignore[type-arg]
    """One shopper as a rule sees it: `record[access.key]`, resolved lazily from the messages.

    List fields used for membership are copied into a frozenset once per record (scanning a
    protobuf repeated field costs ~0.3 us per element); map entries are read straight from
    the protobuf map. All `events(...)` windows are computed together, on the
    first one read, by one pass over the serialized counters (scoring.rules.daily).
    """

    __slots__ = ("_containers", "context", "profile", "resolver")

    def __init__(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int,
                 resolver: Resolver) -> None:
        super().__init__()
        self[NOW_KEY] = now_ms
        self.profile = profile
        self.context = context
        self.resolver = resolver
        self._containers: dict[str, Any] = {}

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.resolver.getters[key](self)
        return value

    def container(self, field: str) -> frozenset[str]:
        """A list field as a frozenset, built once per record (for membership tests)."""
        value = self._containers.get(field)
        if value is None:
            value = self._containers[field] = frozenset(_raw(field)(self))
        return value

    def cart(self) -> list[tuple[str, int, float]]:
        value = self._containers.get("$cart")
        if value is None:
            value = self._containers["$cart"] = [(i.product_id, _quantity(i), i.price) for i in self.profile.cart]
        return value

    def fill_events(self) -> ProfileRecord:
        """Store every events window the resolver knows into the record.

        Few counters: one Python pass over them. Many: one pass of the compiled kernel over
        the serialized message (serializing costs less than reading ~20 counters in Python).
        """
        resolver = self.resolver
        today = self[NOW_KEY] // DAY_MS
        counters = self.profile.daily_events
        sums = None
        if len(counters) > KERNEL_MIN_COUNTERS and resolver.plan is not None:
            sums = resolver.plan.sums(self.profile.SerializeToString(), today)
        if sums is None:
            totals = dict.fromkeys(resolver.event_keys, 0)
            wanted = resolver.event_windows
            for entry in counters:
                windows = wanted.get(entry.type)
                if windows is not None:
                    day = entry.day
                    if day <= today:
                        for key, offset in windows:
                            if day >= today + offset:
                                totals[key] += entry.count
            for key, value in totals.items():
                self[key] = float(value)
        else:
            for key, value in zip(resolver.event_keys, sums.tolist(), strict=True):
                self[key] = value
        return self


def events_slow(profile: common_pb2.Profile, event: str, days: int, today: int) -> float:
    """events(event, days=days) through the protobuf API: the obvious version."""
    code = common_pb2.EventType.Value(event)
    first = today - days + 1
    return float(sum(e.count for e in profile.daily_events if e.type == code and first <= e.day <= today))


class Resolver:
    """How to read a set of accesses from Profile/Context messages (getters + events windows)."""

    def __init__(self, accesses: Iterable[Access] = ()) -> None:
        self.getters: dict[str, Callable[[ProfileRecord], Any]] = {}
        self.event_accesses: list[Access] = []
        self.event_keys: tuple[str, ...] = ()
        # event type code -> ((key, 1 - days), ...): a counter of that type on `day` counts
        # for the window when day >= today + 1 - days.
        self.event_windows: dict[int, tuple[tuple[str, int], ...]] = {}
        self.plan: WindowPlan | None = None
        self._accesses: dict[str, Access] = {}
        self._bulk: list[tuple[bool, tuple[str, ...], Callable[[Any], Any], Callable[[Any], Any] | None]] = []
        self._map_entries: list[tuple[Callable[[Any], Any], list[tuple[str, Any, Any, Callable[[Any], Any]]]]] = []
        self.add(accesses)

    def add(self, accesses: Iterable[Access]) -> None:
        new_events = False
        for access in accesses:
            if access.key in self.getters:
                continue
            self._accesses[access.key] = access
            if access.kind == "events":
                self.event_accesses.append(access)
                self.getters[access.key] = _events_getter(access.key)
                new_events = True
            else:
                self.getters[access.key] = getter(access)
        self._plan_bulk()
        if new_events:
            self.event_keys = tuple(a.key for a in self.event_accesses)
            windows: dict[int, list[tuple[str, int]]] = {}
            for a in self.event_accesses:
                windows.setdefault(common_pb2.EventType.Value(a.field), []).append((a.key, 1 - a.arg))  # type: ignore[operator]
            self.event_windows = {code: tuple(w) for code, w in windows.items()}
            self.plan = WindowPlan(
                field=_DAILY_FIELD, day_field=_DAILY_FIELDS["day"], type_field=_DAILY_FIELDS["type"],
                count_field=_DAILY_FIELDS["count"],
                types=np.array([common_pb2.EventType.Value(a.field) for a in self.event_accesses]),
                days=np.array([a.arg for a in self.event_accesses]),
            )

    def record(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> ProfileRecord:
        """A record with every plain scalar field and map entry already read, in bulk (one C-level
        attrgetter call per message and type instead of one getter call per field); the
        rest (lists, cart, events) is resolved on first use."""
        record = ProfileRecord(profile, context, now_ms, self)
        for on_context, keys, get, convert in self._bulk:
            values = get(context if on_context else profile)
            record.update(zip(keys, map(convert, values) if convert else values, strict=True))
        for get_map, entries in self._map_entries:
            mapping = get_map(profile)
            for key, entry, default, convert in entries:
                record[key] = convert(mapping.get(entry, default))
        return record

    def _plan_bulk(self) -> None:
        groups: dict[tuple[bool, VT], list[Access]] = {}
        maps: dict[str, list[Access]] = {}
        for key in self.getters:
            access = self._accesses[key]
            if access.kind == "field" and access.field not in _DERIVED:
                on_context = access.field.startswith("context.")
                groups.setdefault((on_context, access.type), []).append(access)
            elif access.kind == "key":
                maps.setdefault(access.field, []).append(access)
        self._bulk = []
        for (on_context, t), accesses in groups.items():
            paths = [a.field.removeprefix("context.") if on_context else a.field for a in accesses]
            one = operator.attrgetter(*paths)
            get = one if len(paths) > 1 else (lambda m, one=one: (one(m),))
            convert = float if t is VT.NUMBER else bool if t is VT.BOOL else None
            self._bulk.append((on_context, tuple(a.key for a in accesses), get, convert))
        self._map_entries = [
            (operator.attrgetter(field), [(a.key, a.arg, 0.0 if a.type is VT.NUMBER else "",
                                           float if a.type is VT.NUMBER else str) for a in accesses])
            for field, accesses in maps.items()
        ]


def _events_getter(key: str) -> Callable[[ProfileRecord], Any]:
    return lambda r: dict.__getitem__(r.fill_events(), key)


def _cart_size(r: ProfileRecord) -> float:
    return float(sum(q for _, q, _ in r.cart()))


def _cart_value(r: ProfileRecord) -> float:
    return float(sum(price * q for _, q, price in r.cart()))


def _cart_product_ids(r: ProfileRecord) -> list[str]:
    return [product_id for product_id, _, _ in r.cart()]


_DERIVED: dict[str, Callable[[ProfileRecord], Any]] = {
    "cart_size": _cart_size, "cart_value": _cart_value, "cart_product_ids": _cart_product_ids,
}


def _raw(field: str) -> Callable[[ProfileRecord], Any]:
    """The raw message value of a schema field (a scalar, a repeated field or a map)."""
    if field in _DERIVED:
        return _DERIVED[field]
    if field.startswith("context."):
        get_c = operator.attrgetter(field.removeprefix("context."))
        return lambda r: get_c(r.context)
    get_p = operator.attrgetter(field)
    return lambda r: get_p(r.profile)


def _scalar_getter(field: str, t: VT) -> Callable[[ProfileRecord], Any]:
    """One closure per scalar field, straight to the message attribute (the hot case)."""
    if field in _DERIVED:
        derive = _DERIVED[field]
        return derive if t is not VT.BOOL else (lambda r: bool(derive(r)))
    on_context = field.startswith("context.")
    get = operator.attrgetter(field.removeprefix("context.") if on_context else field)
    if on_context:
        if t is VT.NUMBER:
            return lambda r: float(get(r.context))
        if t is VT.BOOL:
            return lambda r: bool(get(r.context))
        return lambda r: get(r.context)
    if t is VT.NUMBER:
        return lambda r: float(get(r.profile))
    if t is VT.BOOL:
        return lambda r: bool(get(r.profile))
    return lambda r: get(r.profile)


def getter(access: Access) -> Callable[[ProfileRecord], Any]:
    kind, field, arg, t = access.kind, access.field, access.arg, access.type
    if kind == "field":
        return _scalar_getter(field, t)
    raw = _raw(field)
    if kind == "key":  # straight on the protobuf map: cheaper than copying it for < ~25 lookups
        if t is VT.NUMBER:
            return lambda r: float(raw(r).get(arg, 0.0))
        return lambda r: raw(r).get(arg, "")
    if kind == "index":
        def element(r: ProfileRecord) -> str:
            items = raw(r)
            return items[arg] if arg < len(items) else ""  # type: ignore[operator]
        return element
    if kind == "contains":
        if SCHEMA.fields[field] is FieldType.STRING_LIST:
            return lambda r: arg in r.container(field)  # a list scan is slow: one frozenset per record
        return lambda r: arg in raw(r)
    if kind == "size":
        return lambda r: float(len(raw(r)))
    raise ValueError(f"unknown access kind {kind!r}")


_EMPTY_CONTEXT = common_pb2.Context()


def _batch_values(access: Access) -> Callable[[Sequence[common_pb2.Profile]], Iterable[Any]]:
    """Column values of one access for many profiles (no request context: a scan), with the same
    meaning as the record getters; one comprehension per access instead of a record per profile."""
    kind, field, arg, t = access.kind, access.field, access.arg, access.type
    if field.startswith("context."):
        constant = getter(access)(ProfileRecord(common_pb2.Profile(), _EMPTY_CONTEXT, 0, Resolver()))
        return lambda chunk: itertools.repeat(constant, len(chunk))
    if field in _DERIVED:
        one, plain = getter(access), Resolver()
        return lambda chunk: [one(ProfileRecord(p, _EMPTY_CONTEXT, 0, plain)) for p in chunk]
    get = operator.attrgetter(field)
    if kind == "field":
        if t is VT.BOOL:
            return lambda chunk: [bool(get(p)) for p in chunk]
        return lambda chunk: map(get, chunk)  # numbers become float64 in the column
    if kind == "key":
        default: Any = 0.0 if t is VT.NUMBER else ""
        return lambda chunk: [get(p).get(arg, default) for p in chunk]
    if kind == "index":
        def elements(chunk: Sequence[common_pb2.Profile]) -> list[str]:
            out = []
            for p in chunk:
                items = get(p)
                out.append(items[arg] if arg < len(items) else "")  # type: ignore[operator]
            return out
        return elements
    if kind == "contains":
        return lambda chunk: [arg in get(p) for p in chunk]
    if kind == "size":
        return lambda chunk: [len(get(p)) for p in chunk]
    raise ValueError(f"unknown access kind {kind!r}")


class ColumnExtractor:
    """Builds the columns a rule needs from a chunk of Profile messages (EstimateSize)."""

    def __init__(self, accesses: Sequence[Access]) -> None:
        self.accesses = tuple(accesses)
        self.events = Resolver([a for a in self.accesses if a.kind == "events"])
        self.values = {a.key: _batch_values(a) for a in self.accesses if a.kind != "events"}

    def batch(self, chunk: Sequence[common_pb2.Profile | bytes], now_ms: int) -> ColumnBatch:
        """Columns for a chunk of profiles, given as messages or as their serialized bytes (as
        streamed by ScanProfiles): bytes feed the events kernel as they are, and are decoded
        only when the rule reads something besides event counters."""
        vocab: dict[str, int] = {}
        columns: dict[str, np.ndarray] = {}
        if self.values:
            profiles = [common_pb2.Profile.FromString(p) if isinstance(p, bytes) else p for p in chunk]
            for access in self.accesses:
                values = self.values.get(access.key)
                if values is not None:
                    columns[access.key] = to_column(values(profiles), access.type, vocab)
        plan = self.events.plan
        if plan is not None:
            today = now_ms // DAY_MS
            sums = plan.sums_many([p if isinstance(p, bytes) else p.SerializeToString() for p in chunk], today)
            for i, access in enumerate(self.events.event_accesses):
                column = columns[access.key] = np.ascontiguousarray(sums[:, i])
                for row in np.flatnonzero(np.isnan(column)):  # malformed bytes: decode, or fail loudly
                    item = chunk[row]
                    profile = common_pb2.Profile.FromString(item) if isinstance(item, bytes) else item
                    column[row] = events_slow(profile, access.field, access.arg, today)  # type: ignore[arg-type]
        return ColumnBatch(len(chunk), columns, vocab)


def warm_up() -> None:
    """Run every path once (record getters, both events paths, column extraction) so the first
    request pays no lazy initialisation; the Numba kernels load from their cache at import."""
    from scoring.rules import compile_rule

    rule = compile_rule('events("PURCHASE", days=30) >= 0 and category_affinity["x"] >= 0 and "p" in '
                        'purchased_product_ids and context.country == "" and cart_size >= 0', SCHEMA)
    profile = common_pb2.Profile(purchased_product_ids=["p"], cart=[common_pb2.CartItem(product_id="p")])
    for day in range(KERNEL_MIN_COUNTERS + 1):
        profile.daily_events.add(day=day, type=common_pb2.PURCHASE, count=1)
    for p in (profile, common_pb2.Profile()):
        rule.matches(Resolver(rule.accesses).record(p, _EMPTY_CONTEXT, 30 * DAY_MS))
    rule.evaluate_columns(ColumnExtractor(rule.accesses).batch([profile, common_pb2.Profile()], 30 * DAY_MS),
                          30 * DAY_MS)
