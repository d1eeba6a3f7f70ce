"""Event builders shared by the profile tests."""

from __future__ import annotations

import itertools
import time

from scoring.units import DAY_MS as DAY_MS  # re-exported: the profile tests import it from here
from scoring.units import MINUTE_MS
from vitrine.v1 import common_pb2

MIN_MS = MINUTE_MS
ET = common_pb2.EventType
_ids = itertools.count()


def now_ms() -> int:
    return int(time.time() * 1000)


def ev(kind: int, user: str = "u1", t: int | None = None, **fields: object) -> common_pb2.Event:
    """An event of `kind` with the fields its type needs filled in, unless given."""
    defaults: dict[str, object] = {"session_id": "s1"}
    if kind in (ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.REMOVE_FROM_CART, ET.PURCHASE):
        defaults["product_id"] = "p1"
    if kind == ET.PURCHASE:
        defaults.update(price=10.0, order_id="o1")
    if kind == ET.SEARCH:
        defaults["query"] = "shoes"
    if kind == ET.CATEGORY_VIEW:
        defaults["category"] = "shoes"
    if kind == ET.COUPON_APPLIED:
        defaults["coupon"] = "SAVE10"
    defaults.update(fields)
    context = defaults.pop("context", None)
    event = common_pb2.Event(event_id=str(defaults.pop("event_id", f"e{next(_ids)}")), user_id=user, type=kind,
                             timestamp_ms=now_ms() if t is None else t, **defaults)  # type: ignore[arg-type]
    if context is not None:
        event.context.CopyFrom(context)  # type: ignore[arg-type]
    return event
