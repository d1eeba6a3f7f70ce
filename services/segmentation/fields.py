"""The rule schema of Vitrine profiles, and how each rule access reads a Profile/Context message.

`SCHEMA` lists every field a rule may name. `wire_read` says where each access of a rule is
in the serialized profile and context, for the kernel of `scoring.rules.wire`: `WireReader`
reads one shopper's feature vector with it (Evaluate: every access a rule program needs,
each once: 100 rules reading `visit_count` read it once) and `ColumnExtractor` the columns of
many (EstimateSize). `FeatureReader` reads the same through the protobuf API: their fallback,
and a second opinion in tests. The meaning of each access is the one of
`scoring.rules.plain` (tests check that all of them agree).
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import numpy as np
from google.protobuf import descriptor
from prometheus_client import Counter

from scoring.rules import (
    VT,
    Access,
    ColumnBatch,
    CompiledRule,
    FieldType,
    Program,
    Schema,
    compile_program,
    compile_rule,
)
from scoring.rules.wire import MALFORMED, Read, WireProgram
from scoring.units import DAY_MS
from services.common.logs import LogOnce
from services.segmentation.config import MAX_EVENT_DAYS
from vitrine.v1 import common_pb2

log = logging.getLogger(__name__)

# Never silent: each message the wire kernel could not read (protobuf's parser read it instead).
WIRE_FALLBACKS = Counter("vitrine_segmentation_wire_fallbacks_total",
                         "Profiles the wire reader could not read, read by the protobuf API instead "
                         "(logged once per path), by path (evaluate, estimate)", ["path"])
_logged = LogOnce()


def _fell_back(path: str, messages: int = 1) -> None:
    WIRE_FALLBACKS.labels(path).inc(messages)
    if _logged.first(path):
        log.warning("the wire reader could not read %d message(s) on the %s path; the protobuf reader read "
                    "them (each is counted in vitrine_segmentation_wire_fallbacks_total; logged once)",
                    messages, path)

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

    def sums(self, profile: common_pb2.Profile, now_ms: int) -> list[float]:
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
        positions = cast(tuple[int, ...], args)  # the checker gives an index access whole numbers
        return lambda p: [items[i] if i < len(items) else "" for items in (raw(p),) for i in positions]
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
    """Reads a rule program's feature vector through the protobuf API, with the meaning of
    scoring.rules.plain: scalars with one C-level attrgetter call per message and type, map
    entries straight from the protobuf map, list membership through one frozenset per list,
    all events windows in one pass. Evaluate reads with WireReader; this is its fallback and
    the second opinion tests hold it to. Build the program over `reading_order(...)` so that
    each part reads a contiguous run of slots."""

    def __init__(self, program: Program) -> None:
        self.program = program
        numbers = list(program.numbers)
        events = [a for a in numbers if a.kind == "events"]  # read apart, in one pass
        first = numbers.index(events[0]) if events else 0
        after = first + len(events)
        if numbers[first:after] != events:
            raise ValueError("events() windows must be contiguous feature slots: build the program over "
                             "reading_order(...)")
        self._events = EventWindows(events) if events else None
        self._before = _parts(numbers[:first])
        self._after = _parts(numbers[after:])
        self._strings = _parts(program.strings)

    def read(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        values: list[Any] = []
        for on_context, part in self._before:
            values += part(context if on_context else profile)
        if self._events is not None:
            values += self._events.sums(profile, now_ms)
        for on_context, part in self._after:
            values += part(context if on_context else profile)
        strings: list[Any] = []
        for on_context, part in self._strings:
            strings += part(context if on_context else profile)
        values += self.program.encode(strings)  # one list of values, one conversion to the vector
        return np.array(values, dtype=np.float64)

    def matching(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        return self.program.matching(self.read(profile, context, now_ms), now_ms)


# -- reading from the serialized profile and context (the Evaluate path) --------------------
# The kernel reads one message: an envelope whose field 1 is the profile and field 2 the
# context, built by concatenating the two serializations behind their tags.
_PROFILE_IN_ENVELOPE, _CONTEXT_IN_ENVELOPE = 1, 2
_CART = common_pb2.Profile.DESCRIPTOR.fields_by_name["cart"].number
_CART_ITEM = {f.name: f.number for f in common_pb2.CartItem.DESCRIPTOR.fields}
_FD = descriptor.FieldDescriptor
_INTEGER_TYPES = {_FD.TYPE_INT32, _FD.TYPE_INT64, _FD.TYPE_UINT32, _FD.TYPE_ENUM}


def _field_path(message: descriptor.Descriptor, dotted: str) -> tuple[tuple[int, ...], descriptor.FieldDescriptor]:
    numbers = []
    for name in dotted.split("."):
        field = message.fields_by_name[name]
        numbers.append(field.number)
        if field.message_type is not None:  # None at the last, scalar, part of the path
            message = field.message_type
    return tuple(numbers), field


def _scalar_op(field: descriptor.FieldDescriptor) -> str:
    if field.type in _INTEGER_TYPES:
        return "varint"
    ops = {_FD.TYPE_BOOL: "bool", _FD.TYPE_DOUBLE: "double", _FD.TYPE_STRING: "string"}
    if field.type not in ops:
        raise ValueError(f"{field.full_name}: no wire read for protobuf type {field.type}")
    return ops[field.type]


def wire_read(access: Access) -> Read:
    """Where `access` is in the envelope, with the meaning FeatureReader gives it."""
    kind, name, arg = access.kind, access.field, access.arg
    path: tuple[int, ...]
    if kind == "events":
        code = common_pb2.EventType.Value(name)
        return Read((_PROFILE_IN_ENVELOPE, _DAILY_FIELD), "window", args=(
            _DAILY_FIELDS["day"], _DAILY_FIELDS["type"], _DAILY_FIELDS["count"], code, int(arg)))  # type: ignore[arg-type]
    if name == "cart_size":
        return Read((_PROFILE_IN_ENVELOPE, _CART), "sum_quantity", args=(_CART_ITEM["quantity"],))
    if name == "cart_value":
        return Read((_PROFILE_IN_ENVELOPE, _CART), "sum_price_quantity",
                    args=(_CART_ITEM["quantity"], _CART_ITEM["price"]))
    if name == "cart_product_ids":  # the product_id of each cart item
        path, product = (_PROFILE_IN_ENVELOPE, _CART), _CART_ITEM["product_id"]
        if kind == "index":
            return Read(path, "element_index", args=(int(arg), product))  # type: ignore[arg-type]
        if kind == "contains":
            return Read(path, "element_contains", key=str(arg), args=(product,))
        return Read(path, "count")  # size
    if name.startswith("context."):
        numbers, field = _field_path(common_pb2.Context.DESCRIPTOR, name.removeprefix("context."))
        path = (_CONTEXT_IN_ENVELOPE, *numbers)
    else:
        numbers, field = _field_path(common_pb2.Profile.DESCRIPTOR, name)
        path = (_PROFILE_IN_ENVELOPE, *numbers)
    if kind == "field":
        return Read(path, _scalar_op(field))
    if kind == "size":
        return Read(path, "count")
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if kind == "contains":
            return Read(path, "map_has", key=str(arg))
        value = _scalar_op(field.message_type.fields_by_name["value"])
        return Read(path, f"map_{value}", key=str(arg))  # key
    if kind == "index":
        return Read(path, "index", args=(int(arg),))  # type: ignore[arg-type]
    return Read(path, "contains", key=str(arg))


def _length_prefix(n: int) -> bytes:
    if n < 0x80:
        return _SHORT[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SHORT = [bytes((n,)) for n in range(0x80)]
_PROFILE_TAG = bytes((_PROFILE_IN_ENVELOPE << 3 | 2,))
_CONTEXT_TAG = bytes((_CONTEXT_IN_ENVELOPE << 3 | 2,))


def envelope(profile: common_pb2.Profile, context: common_pb2.Context) -> bytes:
    """The profile and the context as the one message the wire reads address."""
    p = profile.SerializeToString()
    c = context.SerializeToString()
    return b"".join((_PROFILE_TAG, _length_prefix(len(p)), p, _CONTEXT_TAG, _length_prefix(len(c)), c))


class WireReader:
    """A rule program evaluated straight from the serialized profile and context (one kernel call
    reads every feature and runs the program); FeatureReader's protobuf reads when the bytes
    are not what the reads expect, which a message this process serialized never is (counted and
    logged once if it happens). `wire=False` reads through the protobuf API only (the A/B switch
    of the end-to-end measurement, SegmentationConfig.wire_reader)."""

    def __init__(self, program: Program, *, wire: bool = True) -> None:
        self.program = program
        self.wire = WireProgram(program, [wire_read(a) for a in program.numbers + program.strings], DAY_MS)
        self.use_wire = wire
        self._fallback = FeatureReader(program)

    def read(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        if not self.use_wire:
            return self._fallback.read(profile, context, now_ms)
        features = self.wire.read(envelope(profile, context), now_ms)
        if features is None:
            _fell_back("evaluate")
            return self._fallback.read(profile, context, now_ms)
        return features

    def matching(self, profile: common_pb2.Profile, context: common_pb2.Context, now_ms: int) -> np.ndarray:
        if not self.use_wire:
            return self._fallback.matching(profile, context, now_ms)
        hits = self.wire.run(envelope(profile, context), float(now_ms))
        if hits.shape[0] == 1 and hits[0] == MALFORMED:
            _fell_back("evaluate")
            return self._fallback.matching(profile, context, now_ms)
        return hits


class ColumnExtractor:
    """Builds the columns a rule needs from a chunk of profiles (EstimateSize): one pass of the
    wire kernel over the serialized profiles (as ScanProfiles streams them) reads every access of
    the rule for every row, with WireReader's meaning; strings become the rule's symbol codes,
    which are the batch's vocabulary."""

    def __init__(self, rule: CompiledRule) -> None:
        self.accesses = tuple(rule.accesses)
        self.program = compile_program([rule.expr], reading_order(self.accesses))
        self.slots = self.program.numbers + self.program.strings
        self.wire = WireProgram(self.program, [wire_read(a) for a in self.slots], DAY_MS)
        self._fallback = FeatureReader(self.program)

    def batch(self, chunk: Sequence[common_pb2.Profile | bytes], now_ms: int) -> ColumnBatch:
        """Columns for a chunk of profiles, given as messages or as their serialized bytes. Bytes the
        kernel cannot read are decoded (a DecodeError when they are not a Profile) and read through
        the protobuf API."""
        messages = [p if isinstance(p, bytes) else p.SerializeToString() for p in chunk]
        values, read = self.wire.read_many(messages, now_ms, root=(_PROFILE_IN_ENVELOPE,))
        unread = np.flatnonzero(~read)
        if unread.size:
            _fell_back("estimate", int(unread.size))
        for row in unread:
            item = chunk[int(row)]
            profile = common_pb2.Profile.FromString(item) if isinstance(item, bytes) else item
            values[:, row] = self._fallback.read(profile, _NO_CONTEXT, now_ms)
        columns: dict[str, np.ndarray] = {}
        for access, column in zip(self.slots, values, strict=True):
            if access.type is VT.NUMBER:
                columns[access.key] = column
            else:
                columns[access.key] = column.astype(np.bool_ if access.type is VT.BOOL else np.int32)
        return ColumnBatch(len(chunk), columns, dict(self.program.symbols))


_NO_CONTEXT = common_pb2.Context()  # a scan has no request context: context.* keep their defaults


def warm_up() -> None:
    """Run every path once (the wire kernels for one shopper and for columns, the protobuf reader,
    the program kernel) so the first request pays no lazy initialisation; the Numba kernels load
    from their cache."""
    rule = compile_rule('events("PURCHASE", days=30) >= 0 and category_affinity["x"] >= 0 and "p" in '
                        'purchased_product_ids and context.country == "" and cart_size >= 0', SCHEMA)
    program = compile_program([rule.expr], reading_order(rule.accesses))
    reader = FeatureReader(program)
    profile = common_pb2.Profile(purchased_product_ids=["p"], cart=[common_pb2.CartItem(product_id="p")])
    for day in range(20):
        profile.daily_events.add(day=day, type=common_pb2.PURCHASE, count=1)
    for p in (profile, common_pb2.Profile()):
        program.matching(reader.read(p, common_pb2.Context(), 30 * DAY_MS), 30 * DAY_MS)
        reader.matching(p, common_pb2.Context(), 30 * DAY_MS)
        WireReader(program).matching(p, common_pb2.Context(), 30 * DAY_MS)
    rule.evaluate_columns(ColumnExtractor(rule).batch([profile, common_pb2.Profile()], 30 * DAY_MS), 30 * DAY_MS)
