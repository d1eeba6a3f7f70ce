"""The single customer view, gathered from the public APIs for one page.

`load_customer` reads the profile through the gateway (which resolves aliases and routes to
the shard), then, in parallel and each under its own deadline: the stored events (the JSON
export), segments/offers/experiment assignments (`Evaluate`), what every page type would
show now (`Personalize`, marked as a preview) and the shopper's journey messages. A part
that fails becomes a note on the page; the rest still renders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable
from typing import Any

from services.console.backends import BackendError, Backends, call
from services.console.config import (
    CALL_TIMEOUT_S,
    PAGE_TYPES,
    PERSONALIZE_DEADLINE_MS,
    PERSONALIZE_TIMEOUT_S,
    TIMELINE_EVENTS,
    USER_MESSAGES,
)
from vitrine.v1 import common_pb2, gateway_pb2, journey_pb2, profile_pb2, segment_pb2

# Timeline groups, by event type name.
_GROUPS = {
    "PAGE_VIEW": "on-site", "PRODUCT_VIEW": "on-site", "CATEGORY_VIEW": "on-site", "SEARCH": "on-site",
    "ADD_TO_CART": "cart", "REMOVE_FROM_CART": "cart", "CHECKOUT": "cart", "COUPON_APPLIED": "cart",
    "PURCHASE": "purchase", "EMAIL_OPEN": "e-mail", "EMAIL_CLICK": "e-mail", "EXPOSURE": "experiment",
}


@dataclasses.dataclass
class TimelineItem:
    ts_ms: int
    kind: str          # event type name, or "JOURNEY_MESSAGE"
    group: str         # on-site, cart, purchase, e-mail, journey, experiment
    what: str          # the item: product, category, query, order ...
    context: str       # device, country, source, campaign, session
    personalization_off: bool = False


@dataclasses.dataclass
class PageAnswer:
    page_type: str
    request: gateway_pb2.PersonalizeRequest
    response: gateway_pb2.PersonalizeResponse | None = None
    error: str = ""
    skipped: str = ""  # why the page type was not asked (e.g. no product to anchor on)


@dataclasses.dataclass
class CustomerView:
    query: str
    profile: common_pb2.Profile | None = None
    not_found: bool = False
    error: str = ""                                    # the profile itself could not be read
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # part -> why it is missing
    timeline: list[TimelineItem] = dataclasses.field(default_factory=list)
    stored_events: int = 0
    aliases: list[str] = dataclasses.field(default_factory=list)
    evaluation: segment_pb2.EvaluateResponse | None = None
    pages: list[PageAnswer] = dataclasses.field(default_factory=list)
    messages: list[journey_pb2.Message] = dataclasses.field(default_factory=list)

    @property
    def budget(self) -> float:
        """The typical spend the gateway passes to recommendations (UserSignals.budget)."""
        p = self.profile
        return max(p.avg_order_value, p.avg_session_spend, 0.0) if p is not None else 0.0

    def affinities(self, limit: int) -> list[tuple[str, float]]:
        if self.profile is None:
            return []
        ranked = sorted(self.profile.category_affinity.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:limit]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _context_text(context: dict[str, Any], session_id: str) -> str:
    utm = context.get("utm") or {}
    parts = [context.get("device_type", ""), context.get("country", ""), context.get("traffic_source", ""),
             f"campaign {utm['campaign']}" if utm.get("campaign") else "",
             f"session {session_id}" if session_id else ""]
    return " · ".join(p for p in parts if p)


def event_item(event: dict[str, Any]) -> TimelineItem:
    """One stored event (as the JSON export writes it) as a timeline line."""
    kind = str(event.get("type", "EVENT_TYPE_UNSPECIFIED"))
    bits: list[str] = []
    if event.get("product_id"):
        bits.append(str(event["product_id"]))
    if event.get("category"):
        bits.append(f"in {event['category']}")
    if event.get("query"):
        bits.append(f"“{event['query']}”")
    quantity = _int(event.get("quantity")) or 1
    if event.get("price"):
        bits.append(f"{quantity} x {float(event['price']):.2f}")
    if event.get("order_id"):
        bits.append(f"order {event['order_id']}")
    if event.get("coupon"):
        bits.append(f"coupon {event['coupon']}")
    if event.get("campaign_id"):
        bits.append(f"campaign {event['campaign_id']}")
    if event.get("slot_id"):
        bits.append(f"from slot {event['slot_id']}")
    for exposure in event.get("exposures") or ():
        bits.append(f"{exposure.get('experiment_id', '')}={exposure.get('variant_id', '')}")
    return TimelineItem(
        ts_ms=_int(event.get("timestamp_ms")), kind=kind, group=_GROUPS.get(kind, "other"),
        what=" ".join(bits), context=_context_text(event.get("context") or {}, str(event.get("session_id", ""))),
        personalization_off=bool(event.get("personalization_off")),
    )


def message_item(message: journey_pb2.Message) -> TimelineItem:
    kind = journey_pb2.JourneyKind.Name(message.kind) if message.kind else "journey"
    what = f"{message.journey_id} ({kind.lower()}): {len(message.items)} items"
    if message.offer.offer_id:
        what += f", offer {message.offer.offer_id}"
    return TimelineItem(ts_ms=message.created_ms, kind="JOURNEY_MESSAGE", group="journey", what=what,
                        context=" · ".join(p for p in (message.channel, message.reason) if p))


def page_requests(profile: common_pb2.Profile) -> list[PageAnswer]:
    """One Personalize request per page type, anchored on what this shopper last did."""
    context = profile.last_context
    cart = [item.product_id for item in profile.cart]
    anchor = profile.recently_viewed[0] if profile.recently_viewed else (
        profile.purchased_product_ids[0] if profile.purchased_product_ids else "")
    top = max(profile.category_affinity.items(), key=lambda kv: kv[1])[0] if profile.category_affinity else ""
    out = []
    for page in PAGE_TYPES:
        request = gateway_pb2.PersonalizeRequest(
            user_id=profile.user_id, session_id=profile.last_session_id, context=context, page_type=page,
            deadline_ms=PERSONALIZE_DEADLINE_MS, preview=True)
        skipped = ""
        if page == "product":
            request.product_id = anchor
            skipped = "" if anchor else "no product viewed or bought to stand on"
        elif page in ("category", "search"):
            request.category = top
        elif page in ("cart", "checkout"):
            request.cart_product_ids.extend(cart)
            skipped = "" if cart else "the cart is empty"
        out.append(PageAnswer(page, request, skipped=skipped))
    return out


async def _part(view: CustomerView, name: str, awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except BackendError as err:
        view.notes[name] = str(err)
        return None


async def load_customer(backends: Backends, query: str) -> CustomerView:
    view = CustomerView(query=query)
    try:
        profile = await call("gateway", backends.gateway.GetProfile, profile_pb2.GetProfileRequest(user_id=query))
    except BackendError as err:
        if err.not_found:
            view.not_found = True
        else:
            view.error = str(err)
        return view
    view.profile = profile
    view.pages = page_requests(profile)
    asked = [page for page in view.pages if not page.skipped]

    async def personalize(page: PageAnswer) -> None:
        try:
            page.response = await call("gateway", backends.gateway.Personalize, page.request,
                                       deadline_s=PERSONALIZE_TIMEOUT_S)
        except BackendError as err:
            page.error = str(err)

    export, evaluation, messages, *_ = await asyncio.gather(
        _part(view, "timeline", call("gateway", backends.gateway.ExportProfile,
                                     profile_pb2.ExportProfileRequest(user_id=profile.user_id))),
        _part(view, "segments", call("segmentation", backends.segments.Evaluate,
                                     segment_pb2.EvaluateRequest(profile=profile, context=profile.last_context))),
        _part(view, "journey messages", call(
            "journeys", backends.journeys.ListUserMessages,
            journey_pb2.ListUserMessagesRequest(user_id=profile.user_id, limit=USER_MESSAGES),
            deadline_s=CALL_TIMEOUT_S)),
        *(personalize(page) for page in asked),
    )
    view.evaluation = evaluation
    if messages is not None:
        view.messages = list(messages.messages)
    items: list[TimelineItem] = []
    if export is not None:
        doc = json.loads(export.json)
        events = doc.get("events") or []
        view.stored_events = len(events)
        view.aliases = list(doc.get("aliases") or [])
        items.extend(event_item(e) for e in events[-TIMELINE_EVENTS:])
    items.extend(message_item(m) for m in view.messages)
    items.sort(key=lambda item: item.ts_ms, reverse=True)
    view.timeline = items
    return view
