"""Jinja filters: times, money, enum names."""

from __future__ import annotations

import math
import time
from typing import Any

import jinja2

from vitrine.v1 import journey_pb2, recommend_pb2


def when(ms: int | float | None) -> str:
    """Unix ms as `2026-11-01 14:03 UTC`; empty for 0."""
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(ms) / 1000.0))


def day(ms: int | float | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(float(ms) / 1000.0)) if ms else ""


def when_seconds(ms: int | float | None) -> str:
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ms) / 1000.0))


def ago(ms: int | float | None, now_ms: float | None = None) -> str:
    if not ms:
        return ""
    seconds = max(0.0, ((now_ms or time.time() * 1000.0) - float(ms)) / 1000.0)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def money(value: float | None) -> str:
    number = float(value or 0.0)
    return f"{number:,.2f}" if math.isfinite(number) else "—"


def strategy(value: int) -> str:
    if value not in recommend_pb2.Strategy.values():
        return str(value)
    return recommend_pb2.Strategy.Name(recommend_pb2.Strategy.ValueType(value))


def journey_kind(value: int) -> str:
    if value not in journey_pb2.JourneyKind.values():
        return str(value)
    return journey_pb2.JourneyKind.Name(journey_pb2.JourneyKind.ValueType(value))


def percent(value: float | None) -> str:
    number = float(value or 0.0)
    return f"{100.0 * number:.1f} %" if math.isfinite(number) else "—"  # NaN: no users yet


def install(env: jinja2.Environment) -> None:
    filters: dict[str, Any] = {"when": when, "day": day, "when_seconds": when_seconds, "ago": ago, "money": money,
                               "strategy": strategy, "journey_kind": journey_kind, "percent": percent}
    env.filters.update(filters)
