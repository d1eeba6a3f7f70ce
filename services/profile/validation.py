"""Validation of events and requests: each error names the field and the rule."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping

from scoring.units import DAY_MS
from services.common.errors import InvalidArgument
from services.profile import config as C
from vitrine.v1 import common_pb2

ET = common_pb2.EventType
KNOWN_TYPES = frozenset(v for v in ET.values() if v != ET.EVENT_TYPE_UNSPECIFIED)
NEEDS_PRODUCT = frozenset({ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.REMOVE_FROM_CART, ET.PURCHASE})
PURCHASE, SEARCH, CATEGORY_VIEW, COUPON_APPLIED = ET.PURCHASE, ET.SEARCH, ET.CATEGORY_VIEW, ET.COUPON_APPLIED
TYPE_NAMES = {v: ET.Name(v) for v in KNOWN_TYPES}

_CONTEXT_STRINGS = ("device_type", "os", "browser", "country", "region", "city", "language", "currency",
                    "traffic_source", "ip_country")
_UTM_STRINGS = ("source", "medium", "campaign", "term", "content")


def _has_control(value: str) -> bool:
    return not value.isprintable()


def check_id(value: str, field: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required")
        return
    if len(value) > C.MAX_ID_LENGTH:
        raise InvalidArgument(f"{field} is {len(value)} characters; at most {C.MAX_ID_LENGTH} are allowed")
    if _has_control(value):
        raise InvalidArgument(f"{field} must not contain control characters")


def _check_str(value: str, field: str, limit: int = C.MAX_STRING_LENGTH) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters; at most {limit} are allowed")


def validate_event(event: common_pb2.Event, now_ms: int, retention_days: int) -> common_pb2.Event:
    """Check `event` in place; fill `timestamp_ms` (0 -> now) and `event_id` (empty -> a new id,
    which means no deduplication). Raises InvalidArgument naming the field and the rule."""
    etype = event.type
    if etype not in KNOWN_TYPES:
        raise InvalidArgument(f"event.type {etype} is not a known EventType (PAGE_VIEW ... EMAIL_CLICK)")
    check_id(event.user_id, "event.user_id")
    check_id(event.event_id, "event.event_id", required=False)
    check_id(event.session_id, "event.session_id", required=False)
    check_id(event.order_id, "event.order_id", required=False)
    check_id(event.campaign_id, "event.campaign_id", required=False)
    if etype in NEEDS_PRODUCT and not event.product_id:
        raise InvalidArgument(f"event.product_id is required for {TYPE_NAMES[etype]}")
    check_id(event.product_id, "event.product_id", required=False)

    ts = event.timestamp_ms
    if ts == 0:
        event.timestamp_ms = ts = now_ms
    elif ts < 0:
        raise InvalidArgument(f"event.timestamp_ms {ts} is negative; send Unix epoch milliseconds")
    elif ts > now_ms + C.FUTURE_SKEW_MS:
        raise InvalidArgument(
            f"event.timestamp_ms {ts} is more than {C.FUTURE_SKEW_MS // 60000} minutes in the future "
            f"(server time {now_ms}); send Unix epoch milliseconds"
        )
    elif ts < now_ms - retention_days * DAY_MS:
        raise InvalidArgument(f"event.timestamp_ms {ts} is older than the retention window of {retention_days} days")

    price = event.price
    if not math.isfinite(price) or price < 0 or price > C.MAX_PRICE:
        raise InvalidArgument(f"event.price {price} must be a finite number between 0 and {C.MAX_PRICE:g}")
    if event.quantity < 0 or event.quantity > C.MAX_QUANTITY:
        raise InvalidArgument(f"event.quantity {event.quantity} must be between 1 and {C.MAX_QUANTITY} "
                              "(0 means 1)")
    _check_str(event.category, "event.category")
    _check_str(event.query, "event.query")
    _check_str(event.coupon, "event.coupon")
    _check_str(event.page_url, "event.page_url", C.MAX_URL_LENGTH)

    if etype == PURCHASE:
        if not event.order_id:
            raise InvalidArgument("event.order_id is required for PURCHASE")
        if price <= 0:
            raise InvalidArgument("event.price is required for PURCHASE (a positive unit price)")
    elif etype == SEARCH:
        if not event.query.strip():
            raise InvalidArgument("event.query is required for SEARCH")
    elif etype == CATEGORY_VIEW:
        if not event.category:
            raise InvalidArgument("event.category is required for CATEGORY_VIEW")
    elif etype == COUPON_APPLIED and not event.coupon:
        raise InvalidArgument("event.coupon is required for COUPON_APPLIED")

    if event.HasField("context"):
        ctx = event.context
        for field in _CONTEXT_STRINGS:
            _check_str(getattr(ctx, field), f"event.context.{field}")
        _check_str(ctx.referrer, "event.context.referrer", C.MAX_URL_LENGTH)
        _check_str(ctx.user_agent, "event.context.user_agent", C.MAX_URL_LENGTH)
        for field in ("screen_width", "screen_height"):
            value = getattr(ctx, field)
            if value < 0 or value > C.MAX_SCREEN_PIXELS:
                raise InvalidArgument(f"event.context.{field} {value} must be between 0 and {C.MAX_SCREEN_PIXELS}")
        if ctx.HasField("utm"):
            for field in _UTM_STRINGS:
                _check_str(getattr(ctx.utm, field), f"event.context.utm.{field}")

    if not event.event_id:
        event.event_id = uuid.uuid4().hex
    return event


def validate_traits(traits: Mapping[str, str], field: str = "traits") -> None:
    if len(traits) > C.MAX_TRAITS:
        raise InvalidArgument(f"{field} has {len(traits)} entries; at most {C.MAX_TRAITS} are allowed")
    for key, value in traits.items():
        if not key or len(key) > C.MAX_TRAIT_KEY_LENGTH:
            raise InvalidArgument(f"{field} key {key[:20]!r} must be 1..{C.MAX_TRAIT_KEY_LENGTH} characters")
        _check_str(value, f"{field}[{key!r}]")
