"""Hostile request bytes for any protobuf message type, derived from its descriptor.

`HostileMessages(descriptor, rng).next()` returns bytes of one of these kinds:
- a decodable message with hostile values: huge strings and repeated fields, NUL bytes, NaN
  and infinities, negative and enormous numbers, timestamps (`*_ms`) at 0, negative and far
  future, unknown enum values, deeply nested or huge rule strings;
- raw random bytes, a truncated or bit-flipped message, or a message with invalid UTF-8 in a
  string field (none of which decode).

Random mutation seeded per run rather than hypothesis' search: the fuzz tests need 10,000+
requests per RPC within seconds, and a seeded `random.Random` makes a failure repeat.
Ids the generator makes never start with `PROTECTED_PREFIX`, so shoppers under that prefix
are never named by the fuzzer and their stored state can be compared before and after.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

PROTECTED_PREFIX = "keep-"

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
FAR_FUTURE_MS = 253_402_300_799_999  # 9999-12-31
NOW_MS = 1_764_720_000_000  # 2025-12-03

# Repeated fields: mostly short, sometimes long (the per-request limits must answer, not choke).
MAX_REPEATED = 2_000
MAX_STRING = 70_000
MAX_DEPTH = 4
HUGE_STRING = 1_200_000  # one string of about a megabyte, now and then
# Characters of text per message: most messages are small, a few reach megabytes (up to the
# servers' 16 MiB limit and past it: RESOURCE_EXHAUSTED is an answer too).
TEXT_BUDGETS = (500, 2_000, 20_000, 200_000, 3_000_000)
TEXT_BUDGET_WEIGHTS = (30, 35, 25, 8, 2)


def _ids(rng: random.Random) -> str:
    return rng.choice(("fz-user-1", "fz-user-2", "fz-p1", "fz-seg", "fz-offer", "fz-exp", "fz-j", "p-1", "p-2"))


def hostile_string(rng: random.Random, field_name: str = "", budget: int = MAX_STRING) -> str:
    """One hostile text value, valid UTF-8 (invalid UTF-8 is made at the byte level)."""
    roll = rng.random()
    if budget < 100:
        return rng.choice(("", "fz-user-1", "\x00", "x" * 50, "\U0001F600", "mobile"))
    if field_name in ("rule", "query") and roll < 0.3:
        return hostile_rule(rng)
    if roll < 0.15:
        return ""
    if roll < 0.35:
        return _ids(rng) + rng.choice(("", str(rng.randrange(50))))
    if roll < 0.45:
        return "\x00" * rng.randrange(1, 64) + rng.choice(("", "fz-user-1"))
    if roll < 0.55:
        return "x" * rng.randrange(min(budget, 1000), min(budget, MAX_STRING) + 1)
    if roll < 0.57 and budget >= HUGE_STRING:
        return "y" * HUGE_STRING
    if roll < 0.67:
        return "".join(chr(rng.choice((0x1F600, 0x202E, 0xFEFF, 0x7F, 0x0A, 0x22, 0x5C, 0x27, 0xE9)))
                       for _ in range(rng.randrange(1, 200)))
    if roll < 0.75:
        return rng.choice(("mobile", "desktop", "PURCHASE", "home", "running", "BR", "USD", "email",
                           "a.b", "../../etc/passwd", "%s%n", "{}", "null", "-1", "NaN", "1e400"))
    if roll < 0.85:
        return "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(rng.randrange(1, 40)))
    return "fz-" + "".join(rng.choice("abcdef0123456789") for _ in range(rng.randrange(1, 16)))


def hostile_rule(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        depth = rng.choice((50, 500, 5_000, 20_000))
        return "(" * depth + "visit_count > 1" + ")" * depth
    if roll < 0.35:
        depth = rng.choice((100, 10_000))
        return "not " * depth + "registered"
    if roll < 0.5:
        return " or ".join(f"visit_count > {i}" for i in range(rng.choice((100, 5_000))))
    if roll < 0.6:
        return 'events("PURCHASE", days=' + rng.choice(("-1", "1e308", "99999999999999999999", "0", "nan")) + ") > 0"
    if roll < 0.7:
        return 'category_affinity["' + "k" * rng.randrange(1, 5000) + '"] > 0.5'
    if roll < 0.8:
        return "visit_count in [" + ",".join(str(i) for i in range(rng.choice((10, 20_000)))) + "]"
    return rng.choice(("", "visit_count >=", "1 ==", "((", ")", "and", "__import__('os')", "x" * 100,
                       'days_since(last_seen_ms) < 7 and context.device_type == "mobile"',
                       "visit_count > 1e309", "visit_count > -1e309", '"\x00" == context.country'))


def hostile_int(rng: random.Random, bounds: tuple[int, int], name: str) -> int:
    low, high = bounds
    roll = rng.random()
    if name.endswith("_ms") and roll < 0.5:
        value = rng.choice((0, -1, -NOW_MS, NOW_MS, NOW_MS - 86_400_000 * 40, FAR_FUTURE_MS, 2**62, high))
        return max(low, min(high, value))
    if roll < 0.3:
        return rng.choice((low, high, low + 1, high - 1, 0, -1 if low < 0 else 0, 1))
    if roll < 0.5:
        return rng.randint(low, high)
    if roll < 0.7:
        return max(low, min(high, rng.choice((1, 10, 100, 1000, 10_000, 1_000_000, 2**31, 2**32))))
    return max(low, min(high, rng.randint(-5, 50)))


def hostile_float(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice((math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324, 3.4e38, -3.4e38))
    if roll < 0.6:
        return rng.uniform(-1e9, 1e9)
    return rng.uniform(-2.0, 200.0)


_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32, FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64, FieldDescriptor.TYPE_FIXED64: UINT64,
}


class HostileMessages:
    """An endless source of hostile serialized requests of one message type."""

    def __init__(self, descriptor: Descriptor, rng: random.Random,
                 fixups: Sequence[Callable[[Message, random.Random], None]] = ()) -> None:
        self.descriptor = descriptor
        self.cls = message_factory.GetMessageClass(descriptor)
        self.rng = rng
        self.fixups = fixups

    def message(self) -> Message:
        msg = self.cls()
        self._budget = self.rng.choices(TEXT_BUDGETS, TEXT_BUDGET_WEIGHTS)[0]
        # Half the messages are plausible with a few hostile values, so they get past the first
        # validation error and reach the domain code (folds, merges, rule evaluation).
        self._hostility = self.rng.choice((1.0, 0.03, 0.1))
        self._fill(msg, 0)
        for fix in self.fixups:
            fix(msg, self.rng)
        return msg

    def next(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            return rng.randbytes(rng.choice((1, 2, 5, 17, 100, 1000, 70_000)))
        if roll < 0.2:
            data = self.message().SerializeToString()
            return data[:rng.randrange(len(data))] if len(data) > 1 else b"\x0a\x05ab"
        if roll < 0.28:
            data = bytearray(self.message().SerializeToString())
            for _ in range(rng.randrange(1, 8)):
                if data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if roll < 0.33:
            return self.message().SerializeToString() + self._invalid_utf8_field()
        if roll < 0.36:
            return self.message().SerializeToString() + self._unknown_field()
        return self.message().SerializeToString()

    def _invalid_utf8_field(self) -> bytes:
        strings = [f for f in self.descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
        if not strings:
            return b"\xff\xff\xff"
        field = self.rng.choice(strings)
        payload = self.rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b"))
        return _varint(field.number << 3 | 2) + _varint(len(payload)) + payload

    def _unknown_field(self) -> bytes:
        number = self.rng.choice((999, 536_870_911, 12_345))
        return _varint(number << 3 | 0) + _varint(self.rng.randrange(2**63))

    def _fill(self, msg: Message, depth: int) -> None:
        rng = self.rng
        for field in msg.DESCRIPTOR.fields:
            if rng.random() < 0.35:
                continue
            if field.containing_oneof is not None and rng.random() < 0.5:
                continue
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if field.is_repeated:
                if rng.random() < self._hostility:
                    count = rng.choice((0, 1, 2, 3, 5, 20, 100, rng.randrange(MAX_REPEATED)))
                else:
                    count = rng.choice((0, 1, 2, 3))
                if depth >= MAX_DEPTH - 1 or self._budget < 1000:
                    count = min(count, 3)
                elif field.message_type is not None:
                    count = min(count, 300)
                if is_map:
                    self._fill_map(msg, field, count, depth)
                    continue
                container = getattr(msg, field.name)
                for _ in range(count):
                    if field.message_type is not None:
                        self._fill(container.add(), depth + 1)
                    else:
                        container.append(self._scalar(field))
                continue
            if field.message_type is not None:
                if depth < MAX_DEPTH:
                    sub = getattr(msg, field.name)
                    sub.SetInParent()
                    self._fill(sub, depth + 1)
                continue
            setattr(msg, field.name, self._scalar(field))

    def _fill_map(self, msg: Message, field: FieldDescriptor, count: int, depth: int) -> None:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        container = getattr(msg, field.name)
        for _ in range(min(count, 500)):
            key = self._scalar(key_field)
            if value_field.message_type is not None:
                self._fill(container[key], depth + 1)
            else:
                container[key] = self._scalar(value_field)

    def _scalar(self, field: FieldDescriptor) -> object:
        rng = self.rng
        kind = field.type
        if rng.random() >= self._hostility:
            return self._plausible(field)
        if kind == FieldDescriptor.TYPE_STRING:
            text = hostile_string(rng, field.name, self._budget)
            self._budget -= len(text)
            return text
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randrange(0, 200))
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = hostile_float(rng)
            if kind == FieldDescriptor.TYPE_FLOAT and math.isfinite(value) and abs(value) > 3.4e38:
                value = math.copysign(math.inf, value)
            return value
        if kind == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return rng.choice((*values, *values, -1, 99, 2**31 - 1))
        return hostile_int(rng, _INT_BOUNDS[kind], field.name)

    def _plausible(self, field: FieldDescriptor) -> object:
        rng = self.rng
        kind = field.type
        name = field.name
        if kind == FieldDescriptor.TYPE_STRING:
            if name.endswith("id") or name.endswith("ids"):
                return _ids(rng)
            return rng.choice(("mobile", "desktop", "BR", "running", "shoes", "home", "email", "USD", "fz",
                               "visit_count >= 1", 'context.device_type == "mobile"'))
        if kind == FieldDescriptor.TYPE_BYTES:
            return b"fz"
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return round(rng.uniform(0.0, 120.0), 2)
        if kind == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values if v.number] or [0]
            return rng.choice(values)
        _low, high = _INT_BOUNDS[kind]
        if name.endswith("_ms") and high > 2**32:
            return NOW_MS - rng.randrange(0, 86_400_000 * 60)
        return rng.randrange(0, 20)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)

