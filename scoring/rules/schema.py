"""What a rule may read: field names and their types, supplied by the caller (the service).

The rule core knows nothing about protobufs. A schema maps dotted field names
(`visit_count`, `rfm.r_score`, `context.utm.campaign`) to one of the field types below,
and lists the event type names `events(TYPE, days=N)` accepts.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class FieldType(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"
    TIMESTAMP = "timestamp"            # epoch milliseconds; 0 = never
    STRING_LIST = "list<string>"
    NUMBER_MAP = "map<string,number>"
    STRING_MAP = "map<string,string>"

    @property
    def is_scalar(self) -> bool:
        return self in (FieldType.NUMBER, FieldType.STRING, FieldType.BOOL, FieldType.TIMESTAMP)


# The value a field has when it is missing or unset.
DEFAULTS: dict[FieldType, object] = {
    FieldType.NUMBER: 0.0,
    FieldType.STRING: "",
    FieldType.BOOL: False,
    FieldType.TIMESTAMP: 0.0,
}


@dataclasses.dataclass(frozen=True)
class Schema:
    fields: Mapping[str, FieldType]
    event_types: frozenset[str] = frozenset()
    max_event_days: int = 365

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", dict(self.fields))
        object.__setattr__(self, "event_types", frozenset(self.event_types))
