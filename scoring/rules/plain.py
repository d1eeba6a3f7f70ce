"""Resolve accesses over a profile held as plain nested Python data (dicts, lists, numbers).

This is the neutral, documented meaning of every access; services resolve the same
accesses over their own representation (protobufs) and test that they agree with it.

Plain data: `{"visit_count": 3, "rfm": {"r_score": 5}, "context": {"utm": {"campaign": "x"}},
"category_affinity": {"running": 0.7}, "recently_viewed": ["p1"],
"daily_events": [(day, "PURCHASE", count), ...]}`; anything missing has its default
(0, "", false, empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from scoring.rules.ir import VT, Access
from scoring.rules.program import Program
from scoring.units import DAY_MS

Getter = Callable[[Mapping[str, Any], int], Any]


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of nested dicts, or None."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def scalar(value: Any, t: VT) -> Any:
    if t is VT.NUMBER:
        return float(value) if value else 0.0
    if t is VT.STRING:
        return value if isinstance(value, str) else ""
    return bool(value)


def events_in_window(daily: Iterable[tuple[int, str, int]], event: str, days: int, now_ms: int) -> float:
    """Events of type `event` on UTC days today-days+1 .. today (days since the epoch)."""
    today = now_ms // DAY_MS
    first = today - days + 1
    return float(sum(count for day, kind, count in daily if kind == event and first <= day <= today))


def getter(access: Access) -> Getter:
    kind, field, arg, t = access.kind, access.field, access.arg, access.type
    if kind == "field":
        return lambda d, now: scalar(lookup(d, field), t)
    if kind == "key":
        return lambda d, now: scalar((lookup(d, field) or {}).get(arg), t)
    if kind == "index":
        assert isinstance(arg, int)  # the checker makes an index Access with a whole-number arg
        position = arg

        def element(d: Mapping[str, Any], now: int) -> str:
            items = lookup(d, field) or ()
            return items[position] if position < len(items) else ""
        return element
    if kind == "contains":
        return lambda d, now: arg in (lookup(d, field) or ())
    if kind == "size":
        return lambda d, now: float(len(lookup(d, field) or ()))
    if kind == "events":
        return lambda d, now: events_in_window(d.get("daily_events") or (), field, arg, now)  # type: ignore[arg-type]
    raise ValueError(f"unknown access kind {kind!r}")


def getters_for(accesses: Iterable[Access]) -> dict[str, Getter]:
    return {a.key: getter(a) for a in accesses}


def features(program: Program, data: Mapping[str, Any], now_ms: int) -> np.ndarray:
    """The feature vector of `program` for one profile held as plain data."""
    numbers = [getter(a)(data, now_ms) for a in program.numbers]
    strings = [getter(a)(data, now_ms) for a in program.strings]
    return program.features(numbers, strings)
