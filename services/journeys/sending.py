"""What happens when a journey's timer falls due: the send-time checks and the message content.

`prepare` asks the owners (profile for consent, traits and signals; segmentation for the
segment filter and the offer; recommendation for stock and items) and returns an `Outcome`;
the engine commits it in one transaction, where the frequency cap is checked last so that two
messages to one shopper in the same pass cannot both pass it. The backends are a Protocol so
the checks read as plain code; backends.py holds the gRPC implementation.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import zoneinfo
from collections.abc import Sequence
from typing import Protocol

from services.common.errors import Unavailable
from services.journeys import config as C
from services.journeys.machines import JourneyState, Machine, PriceDrop
from vitrine.v1 import common_pb2, journey_pb2, recommend_pb2, segment_pb2

log = logging.getLogger(__name__)
JK = journey_pb2.JourneyKind

SEND = "send"
SUPPRESS = "suppress"
WAIT = "wait"          # quiet hours or a backend down: the timer moves to due_ms
CANCEL = "cancel"

# Kinds whose message is about the products in the state: without one in stock, no message.
PRODUCT_KINDS = {JK.ABANDONED_CART: "in your cart", JK.BROWSE_ABANDONMENT: "you looked at",
                 JK.BACK_IN_STOCK: "back in stock", JK.PRICE_DROP: "price dropped"}


class Backends(Protocol):
    """The other services, as the journeys service needs them. Raise Unavailable when down."""

    async def profile(self, user_id: str, source: int) -> common_pb2.Profile | None: ...

    async def evaluate(self, profile: common_pb2.Profile, now_ms: int) -> segment_pb2.EvaluateResponse: ...

    async def products(self, product_ids: Sequence[str]) -> dict[str, common_pb2.Product]: ...

    async def recommend(self, request: recommend_pb2.RecommendRequest) -> list[recommend_pb2.ScoredProduct]: ...


@dataclasses.dataclass(frozen=True)
class SendSettings:
    store_timezone: str = "UTC"
    quiet_start_hour: int = C.DEFAULT_QUIET_START_HOUR
    quiet_end_hour: int = C.DEFAULT_QUIET_END_HOUR
    frequency_cap: int = C.DEFAULT_FREQUENCY_CAP
    frequency_window_ms: int = C.DEFAULT_FREQUENCY_WINDOW_HOURS * C.HOUR_MS
    attribution_ms: int = C.DEFAULT_ATTRIBUTION_DAYS * C.DAY_MS
    visibility_ms: int = int(C.DEFAULT_VISIBILITY_TIMEOUT_SECONDS * 1000)
    retry_ms: int = int(C.DEFAULT_SEND_RETRY_SECONDS * 1000)


@dataclasses.dataclass
class Outcome:
    kind: str
    reason: str = ""
    due_ms: int = 0
    message: journey_pb2.Message | None = None
    skip_cap: bool = False


def message_id(journey_id: str, user: str, entry: int) -> str:
    """Stable across retries and restarts: one entry of one shopper in one journey, one id."""
    digest = hashlib.sha256(f"{journey_id}\0{user}\0{entry}".encode()).hexdigest()
    return "m_" + digest[:24]


def zone(name: str, fallback: str) -> zoneinfo.ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return zoneinfo.ZoneInfo(candidate)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
    return zoneinfo.ZoneInfo("UTC")


def quiet_until(now_ms: int, tz: zoneinfo.ZoneInfo, start_hour: int, end_hour: int) -> int | None:
    """If now is inside quiet hours in `tz`, the time they end; else None. start == end: no quiet hours."""
    if start_hour == end_hour:
        return None
    local = datetime.datetime.fromtimestamp(now_ms / 1000, tz)
    hour = local.hour
    inside = (start_hour <= hour or hour < end_hour) if start_hour > end_hour else start_hour <= hour < end_hour
    if not inside:
        return None
    end = local.replace(hour=end_hour, minute=0, second=0, microsecond=0)
    if end <= local:
        end = (local + datetime.timedelta(days=1)).replace(hour=end_hour, minute=0, second=0, microsecond=0)
        end = end.replace(tzinfo=None).replace(tzinfo=tz)   # the wall time on that day (DST-safe)
    return int(end.timestamp() * 1000)


def cap_allows(sends: list[int], now_ms: int, cap: int, window_ms: int) -> tuple[bool, list[int]]:
    """Is one more message allowed? Also returns the send times still inside the window."""
    recent = [t for t in sends if t > now_ms - window_ms]
    return (cap <= 0 or len(recent) < cap), recent


def user_signals(profile: common_pb2.Profile) -> recommend_pb2.UserSignals:
    return recommend_pb2.UserSignals(
        user_id=profile.user_id, recent_product_ids=profile.recently_viewed,
        purchased_product_ids=profile.purchased_product_ids, category_affinity=profile.category_affinity,
        budget=profile.avg_order_value, recent_view_counts=profile.recently_viewed_counts)


def _scored(product: common_pb2.Product, reason: str) -> recommend_pb2.ScoredProduct:
    return recommend_pb2.ScoredProduct(product_id=product.product_id, title=product.title,
                                       category=product.category, price=product.price, reason=reason,
                                       stock=product.stock, brand=product.brand, score=1.0)


async def prepare(machine: Machine, user: str, state: JourneyState, now_ms: int, backends: Backends,
                  settings: SendSettings) -> Outcome:
    """Decide the fate of a due state: send (with the message), suppress (with the reason), wait."""
    journey = machine.journey
    params = journey.params
    try:
        profile = await backends.profile(user, state.source)
        if profile is None:
            return Outcome(SUPPRESS, "no_profile")
        if not profile.consent.marketing:
            return Outcome(SUPPRESS, "no_consent")
        if params.get("skip_quiet_hours") != "true":
            tz = zone(profile.traits.get("timezone", ""), settings.store_timezone)
            until = quiet_until(now_ms, tz, settings.quiet_start_hour, settings.quiet_end_hour)
            if until is not None:
                return Outcome(WAIT, "quiet_hours", due_ms=until)
        if journey.reentry_days and state.last_sent_ms and \
                now_ms - state.last_sent_ms < journey.reentry_days * C.DAY_MS:
            return Outcome(SUPPRESS, "reentry")
        offer = None
        if journey.segment_ids or journey.offer_id:
            evaluation = await backends.evaluate(profile, now_ms)
            if journey.segment_ids and not set(journey.segment_ids) & set(evaluation.segment_ids):
                return Outcome(SUPPRESS, "not_in_segment")
            offer = next((o for o in evaluation.offers if o.offer_id == journey.offer_id), None)
        items: list[recommend_pb2.ScoredProduct] = []
        trigger = list(state.products)
        if journey.kind in PRODUCT_KINDS and trigger:
            found = await backends.products(trigger)
            in_stock = [found[p] for p in trigger if p in found and found[p].stock > 0]
            if isinstance(machine, PriceDrop):
                in_stock = [p for p in in_stock if p.price <= machine.threshold(state.reference_price or p.price)]
                if not in_stock:
                    return Outcome(SUPPRESS, "price_restored")
            if not in_stock:
                return Outcome(SUPPRESS, "out_of_stock")
            items = [_scored(p, PRODUCT_KINDS[journey.kind]) for p in in_stock]
        elif journey.kind in PRODUCT_KINDS:
            return Outcome(SUPPRESS, "out_of_stock")
        items.extend(await _recommended(machine, profile, trigger, backends))
    except Unavailable as exc:
        log.warning("journey %s for %s: %s; trying again later", journey.journey_id, user, exc.message)
        return Outcome(WAIT, "backend_unavailable", due_ms=now_ms + settings.retry_ms)
    message = journey_pb2.Message(
        message_id=message_id(journey.journey_id, user, state.entry), journey_id=journey.journey_id,
        kind=journey.kind, user_id=profile.user_id or user, customer_id=profile.customer_id,
        created_ms=now_ms, due_ms=state.due_ms, items=items, traits=profile.traits,
        reason=_reason(journey.kind, trigger), channel=params.get("channel", "email"))
    if offer is not None:
        message.offer.CopyFrom(offer)
    return Outcome(SEND, message=message, skip_cap=params.get("skip_frequency_cap") == "true")


async def _recommended(machine: Machine, profile: common_pb2.Profile, trigger: list[str],
                       backends: Backends) -> list[recommend_pb2.ScoredProduct]:
    """Items from recommendation under the journey's strategy; left out (logged) when it is down,
    since the message still has its reason to exist."""
    journey = machine.journey
    request = recommend_pb2.RecommendRequest(
        strategy=journey.strategy or machine.default_strategy, k=journey.k or C.DEFAULT_K,
        product_id=trigger[0] if trigger else "", user=user_signals(profile),
        constraints=recommend_pb2.Constraints(exclude_product_ids=trigger,
                                              exclude_purchased=journey.kind == JK.POST_PURCHASE))
    if journey.kind == JK.ABANDONED_CART:
        request.cart_product_ids.extend(trigger)
    try:
        found = await backends.recommend(request)
    except Unavailable as exc:
        log.warning("journey %s: no recommended items (%s)", journey.journey_id, exc.message)
        return []
    return [item for item in found if item.stock > 0 and item.product_id not in trigger]


def _reason(kind: journey_pb2.JourneyKind.ValueType, trigger: list[str]) -> str:
    name = journey_pb2.JourneyKind.Name(kind).lower()
    return f"{name}: {', '.join(trigger[:5])}" if trigger else name
