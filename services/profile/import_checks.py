"""Range checks for every numeric field of an imported Profile (ImportProfile).

An imported profile is folded into the stored one by adding counters (`fold.merge_into`), so a
counter near the int32/int64 limit, a negative count, a NaN or an infinite amount would
overflow the fold or poison the RFM buckets. Every number is checked here, walking the message
descriptor so a field added to `Profile` is covered too; the error names the field and its range.
The fold itself saturates (`fold.saturating_add`) for values that pass, because merges repeat.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.errors import InvalidArgument
from vitrine.v1 import common_pb2

# Largest accepted values. Counts far above any real shopper's, and far enough below the type's
# limit that the sums of a few merges still fit before saturation is needed.
MAX_IMPORT_COUNT_32 = 100_000_000  # visit_count, purchase_count, cart quantity, daily counts, ...
MAX_IMPORT_COUNT_64 = 10**12  # event_count, event_counts.total
MAX_IMPORT_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_IMPORT_AMOUNT = 1e12  # money (total_spend, prices, averages) and other doubles
MAX_IMPORT_SCREEN = 100_000  # context screen_width / screen_height, pixels
MAX_IMPORT_DAILY = 1_000_000  # daily_events.count: events of one type on one day

_INT32 = frozenset({FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
                    FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32})
_INT64 = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
                    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
_FLOAT = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


def _limit(field: FieldDescriptor) -> float:
    if field.name.endswith("_ms"):
        return MAX_IMPORT_TIME_MS
    if field.name.startswith("screen_"):
        return MAX_IMPORT_SCREEN
    if field.containing_type is not None and field.containing_type.name == "DailyEventCount" \
            and field.name == "count":
        return MAX_IMPORT_DAILY
    if field.type in _INT32:
        return MAX_IMPORT_COUNT_32
    if field.type in _INT64:
        return MAX_IMPORT_COUNT_64
    return MAX_IMPORT_AMOUNT


def _check_number(value: float, field: FieldDescriptor, where: str) -> None:
    if field.type in _FLOAT and not math.isfinite(value):
        raise InvalidArgument(f"{where} is {value}; it must be a finite number")
    limit = _limit(field)
    # rfm.recency_days is -1 for a shopper who never bought (what GetProfile answers, so what a
    # shard move imports).
    lowest = -1 if field.name == "recency_days" else 0
    if value < lowest or value > limit:
        raise InvalidArgument(f"{where} is {value}; it must be between {lowest} and {limit:g}")


def _check_message(msg: Message, path: str) -> None:
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}"
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type in _INT32 | _INT64 | _FLOAT:
                    for key, item in value.items():
                        _check_number(item, value_field, f"{where}[{key!r}]")
                continue
            items = value if field.is_repeated else (value,)
            for i, item in enumerate(items):
                _check_message(item, f"{where}[{i}]" if field.is_repeated else where)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            continue  # enum values are checked where they are used (an unknown type is ignored)
        elif field.type in _INT32 | _INT64 | _FLOAT:
            for i, item in enumerate(value if field.is_repeated else (value,)):
                _check_number(item, field, f"{where}[{i}]" if field.is_repeated else where)


def check_imported_profile(profile: common_pb2.Profile) -> None:
    """Raise InvalidArgument naming the first numeric field of `profile` out of its range."""
    _check_message(profile, "profile")
