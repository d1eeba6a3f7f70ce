"""The rule schema of Vitrine profiles, and how each rule access reads a Profile/Context message.

`SCHEMA` lists every field a rule may name. `FeatureReader` reads, for one shopper, every
access a rule program needs into its feature vector, each once (100 rules reading
`visit_count` read it once); `ColumnExtractor` reads columns for many shoppers
(EstimateSize). The meaning of each access is the one of `scoring.rules.plain` (tests
check that they agree).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from scoring.rules import VT, Access, ColumnBatch, FieldType, Program, Schema, compile_program, compile_rule
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


def _cart_totals(profile: common_pb2.Profile) -> tuple[float, float]:
    """(cart_size, cart_value) in one pass over the cart (a quantity of 0 counts 1)."""
    size = value = 0.0
    for item in profile.cart:
        quantity = item.quantity  # each protobuf attribute read costs: read it once
        if quantity <= 0:
            quantity = 1
        size += quantity
        value += item.price * quantity
    return size, value


def _cart_size(profile: common_pb2.Profile) -> float:
    return _cart_totals(profile)[0]


def _cart_value(profile: common_pb2.Profile) -> float:
    return _cart_totals(profile)[1]


def _cart_product_ids(profile: common_pb2.Profile) -> list[str]:
    return [i.product_id for i in profile.cart]


_DERIVED: dict[str, Callable[[common_pb2.Profile], Any]] = {
    "cart_size": _cart_size, "cart_value": _cart_value, "cart_product_ids": _cart_product_ids,
}
_DEFAULTS: dict[VT, Any] = {VT.NUMBER: 0.0, VT.STRING: "", VT.BOOL: False}


def _raw(field: str) -> Callable[[common_pb2.Profile], Any]:
    """The profile's value of a non-context schema field (a scalar, a repeated field or a map)."""
    return _DERIVED.get(field) or operator.attrgetter(field)


def events_slow(profile: common_pb2.Profile, event: str, days: int, today: int) -> float:
    """events(event, days=days) through the protobuf API: the obvious version."""
    code = common_pb2.EventType.Value(event)
    first = today - days + 1
    return float(sum(e.count for e in profile.daily_events if e.type == code and first <= e.day <= today))


class EventWindows:
    """Every `events(TYPE, days=N)` window of a rule set, summed in one pass over the counters."""

    def __init__(self, accesses: Iterable[Access]) -> None:
        self.accesses = tuple(a for a in accesses if a.kind == "events")
        # event type code -> ((position, 1 - days), ...): a counter of that type on `day` counts
        # for the window when today + 1 - days <= day <= today.
        windows: dict[int, list[tuple[int, int]]] = {}
        for i, a in enumerate(self.accesses):
            windows.setdefault(common_pb2.EventType.Value(a.field), []).append((i, 1 - a.arg))  # type: ignore[operator]
        self.windows = {code: tuple(w) for code, w in windows.items()}
        self.plan = WindowPlan(
            field=_DAILY_FIELD, day_field=_DAILY_FIELDS["day"], type_field=_DAILY_FIELDS["type"],
            count_field=_DAILY_FIELDS["count"],
            types=np.array([common_pb2.EventType.Value(a.field) for a in self.accesses], dtype=np.int64),
            days=np.array([a.arg for a in self.accesses], dtype=np.int64),
        ) if self.accesses else None

    def sums(self, profile: common_pb2.Profile, now_ms: int) -> list[float]:
        """Few counters: one Python pass over them. Many: one pass of the compiled kernel over the
        serialized message (serializing costs less than reading ~20 counters in Python)."""
        if self.use_kernel(profile):
            sums = self.plan.sums(profile.SerializeToString(), now_ms // DAY_MS)  # type: ignore[union-attr]
            if sums is not None:
                return sums
        return self.counted(profile, now_ms)

    def use_kernel(self, profile: common_pb2.Profile) -> bool:
        return self.plan is not None and len(profile.daily_events) > KERNEL_MIN_COUNTERS

    def counted(self, profile: common_pb2.Profile, now_ms: int) -> list[float]:
        """The sums through the protobuf API, one pass over the counters."""
        today = now_ms // DAY_MS
        totals = [0] * len(self.accesses)
        windows = self.windows
        for entry in profile.daily_events:
            wanted = windows.get(entry.type)
            if wanted is not None:
                day = entry.day
                if day <= today:
                    for i, offset in wanted:
                        if day >= today + offset:
                            totals[i] += entry.count
        return totals  # type: ignore[return-value]


# A part reads a run of feature values from one message: the context for the "context" group,
# the profile for every other. Taking the message itself lets a part be a C-level attrgetter,
# with no Python frame around it.
Part = Callable[[Any], Sequence[Any]]


def _group(access: Access) -> tuple[str, str]:
    """Accesses of one group are read together by one part (see FeatureReader)."""
    if access.kind == "field":
        if access.field.startswith("context."):
            return "context", ""
        return ("cart", "") if access.field in _DERIVED else ("profile", "")
    if access.kind in ("events", "size"):
        return access.kind, ""
    return access.kind, access.field


def reading_order(accesses: Iterable[Access]) -> list[Access]:
    """Accesses sorted so that each group is contiguous: the slot order FeatureReader reads fastest
    (cart_size before cart_value, the order _cart_totals returns them in)."""
    return sorted(accesses, key=lambda a: (_group(a), a.field if a.field in _DERIVED else ""))


def _part(group: tuple[str, str], accesses: Sequence[Access]) -> Part:
    kind, field = group
    if kind in ("profile", "context"):
        paths = [a.field.removeprefix("context.") for a in accesses]
        get = operator.attrgetter(*paths)
        return get if len(paths) > 1 else (lambda m: (get(m),))
    if kind == "cart":  # cart_size and/or cart_value from one pass over the cart
        picks = tuple(int(a.field == "cart_value") for a in accesses)
        if picks == (0, 1):  # both, in reading_order's order: the totals as they come
            return _cart_totals
        return lambda p: [totals[i] for totals in (_cart_totals(p),) for i in picks]
    if kind == "size":
        raws = [_raw(a.field) for a in accesses]
        return lambda p: [len(raw(p)) for raw in raws]
    raw = _raw(field)
    args = [a.arg for a in accesses]
    if kind == "key":  # straight on the protobuf map: cheaper than copying it for < ~25 lookups
        default = _DEFAULTS[accesses[0].type]
        if len(args) == 1:  # one key (traits["tier"]): a tuple, ~0.4 us less than a comprehension
            key = args[0]
            return lambda p: (raw(p).get(key, default),)
        defaults = [default] * len(args)
        return lambda p: list(map(raw(p).get, args, defaults))
    if kind == "index":
        return lambda p: [items[i] if i < len(items) else "" for items in (raw(p),) for i in args]
    if kind == "contains":
        if SCHEMA.fields[field] is FieldType.STRING_LIST and len(args) > 1:
            # Scanning a repeated field costs ~0.3 us per element: one frozenset for all the tests.
            return lambda p: [k in items for items in (frozenset(raw(p)),) for k in args]
        return lambda p: [k in items for items in (raw(p),) for k in args]
    raise ValueError(f"unknown access kind {kind!r}")


def _parts(accesses: Sequence[Access]) -> tuple[tuple[bool, Part], ...]:
    """(reads the context, part) per run of consecutive accesses of the same group."""
    return tuple((group[0] == "context", _part(group, list(run)))
                 for group, run in itertools.groupby(accesses, key=_group))


class FeatureReader:
    """Reads a rule program's feature vector from Profile/Context messages, with the meaning of
    scoring.rules.plain: scalars with one C-level attrgetter call per message and type, map
    entries straight from the protobuf map, list membership through one frozenset per list,
    all events windows in one pass (many counters: by the program's kernel, see matching()).
    Build the program over `reading_order(...)` so that each part reads a contiguous run of slots."""

    def __init__(self, program: Program) -> None:
        self.program = program
        numbers = list(program.numbers)
        events = [a for a in numbers if a.kind == "events"]  # read apart: see _vector
        self._first = numbers.index(events[0]) if events else 0
        after = self._first + len(events)
        if numbers[self._first:after] != events:
            raise ValueError("events() windows must be contiguous feature slots: build the program over "
                             "reading_order(...)")
        self._events = EventWindows(events)
        self._zeros = [0.0] * len(events)
        self._before = _parts(numbers[:self._first])
        self._after = _parts(numbers[after:])
        self._strings = _parts(program.strings)
        plan = self._events.plan
        self._run_windows = program.windows_runner(plan.spec, self._first) if plan is not None else None

    def _vector(self, profile: common_pb2.Profile, context: common_pb2.Context,
                now_ms: int) -> tuple[np.ndarray, bytes | None]:
        """The feature vector, and the serialized profile when the events windows are left at 0
        for the kernel to sum from it (many counters)."""
        values: list[Any] = []
        for on_context, part in self._before:
            values += part(context if on_context else profile)
        message = None
        if self._events.use_kernel(profile):
            message = profile.SerializeToString()
            values += self._zeros
        elif self._zeros:
            values += self._events.counted(profile, now_ms)
        for on_context, part in self._after:
            values += part(context if on_context else profile)
        strings: list[Any] = []
        for on_context, part in self._strings:
            strings += part(context if on_context else profile)
        values += self.program.encode(strings)  # one list of values, one conversion to the vector
        return np.array(values, dtype=np.float64), message

    def read(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        features, message = self._vector(profile, context, now_ms)
        if message is not None:
            features[self._first:self._first + len(self._zeros)] = self._events.sums(profile, now_ms)
        return features

    def matching(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        """program.matching(read(...)), with the events windows summed inside the program's kernel."""
        features, message = self._vector(profile, context, now_ms)
        if message is not None:  # only with a plan (use_kernel)
            hits = self._run_windows(features, now_ms, message, now_ms // DAY_MS)  # type: ignore[misc]
            if hits is not None:
                return hits
            features[self._first:self._first + len(self._zeros)] = self._events.counted(profile, now_ms)
        return self.program.matching(features, now_ms)


def _batch_values(access: Access) -> Callable[[Sequence[common_pb2.Profile]], Iterable[Any]]:
    """Column values of one access for many profiles (no request context: a scan), with the same
    meaning as FeatureReader; one comprehension per access."""
    kind, field, arg, t = access.kind, access.field, access.arg, access.type
    if field.startswith("context."):
        return lambda chunk: itertools.repeat(_DEFAULTS[t], len(chunk))
    get = _raw(field)
    if kind == "field":
        if t is VT.BOOL:
            return lambda chunk: [bool(get(p)) for p in chunk]
        return lambda chunk: map(get, chunk)  # numbers become float64 in the column
    if kind == "key":
        default: Any = _DEFAULTS[t]
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
        self.events = EventWindows(self.accesses)
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
            for i, access in enumerate(self.events.accesses):
                column = columns[access.key] = np.ascontiguousarray(sums[:, i])
                for row in np.flatnonzero(np.isnan(column)):  # malformed bytes: decode, or fail loudly
                    item = chunk[row]
                    profile = common_pb2.Profile.FromString(item) if isinstance(item, bytes) else item
                    column[row] = events_slow(profile, access.field, access.arg, today)  # type: ignore[arg-type]
        return ColumnBatch(len(chunk), columns, vocab)


def warm_up() -> None:
    """Run every path once (feature parts, both events paths, the program kernel, column extraction)
    so the first request pays no lazy initialisation; the Numba kernels load from their cache."""
    rule = compile_rule('events("PURCHASE", days=30) >= 0 and category_affinity["x"] >= 0 and "p" in '
                        'purchased_product_ids and context.country == "" and cart_size >= 0', SCHEMA)
    program = compile_program([rule.expr], reading_order(rule.accesses))
    reader = FeatureReader(program)
    profile = common_pb2.Profile(purchased_product_ids=["p"], cart=[common_pb2.CartItem(product_id="p")])
    for day in range(KERNEL_MIN_COUNTERS + 1):
        profile.daily_events.add(day=day, type=common_pb2.PURCHASE, count=1)
    for p in (profile, common_pb2.Profile()):
        program.matching(reader.read(p, common_pb2.Context(), 30 * DAY_MS), 30 * DAY_MS)
        reader.matching(p, common_pb2.Context(), 30 * DAY_MS)
    rule.evaluate_columns(ColumnExtractor(rule.accesses).batch([profile, common_pb2.Profile()], 30 * DAY_MS),
                          30 * DAY_MS)
