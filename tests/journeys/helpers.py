"""Builders of journeys, events and feed items for the journeys tests."""

from __future__ import annotations

import itertools

from vitrine.v1 import common_pb2, journey_pb2, profile_pb2, recommend_pb2

ET = common_pb2.EventType
JK = journey_pb2.JourneyKind
MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS
DAY_MS = 24 * HOUR_MS
T0 = 1_780_000_000_000       # a fixed instant (2026-05-28 UTC) for pure tests
_seq = itertools.count(1)
_ids = itertools.count()


def journey(kind: int, journey_id: str = "", delay_ms: int = HOUR_MS, **fields: object) -> journey_pb2.Journey:
    name = journey_pb2.JourneyKind.Name(kind).lower()  # type: ignore[arg-type]
    return journey_pb2.Journey(journey_id=journey_id or name, name=name, kind=kind,  # type: ignore[arg-type]
                               enabled=True, delay_ms=delay_ms, **fields)  # type: ignore[arg-type]


def event(kind: int, t: int = T0, user: str = "u1", product: str = "p1", **fields: object) -> common_pb2.Event:
    values: dict[str, object] = {"session_id": "s1"}
    if kind in (ET.PRODUCT_VIEW, ET.ADD_TO_CART, ET.REMOVE_FROM_CART, ET.PURCHASE):
        values["product_id"] = product
    if kind == ET.PURCHASE:
        values.update(price=10.0, order_id="o1")
    values.update(fields)
    return common_pb2.Event(event_id=f"e{next(_ids)}", user_id=user, type=kind,  # type: ignore[arg-type]
                            timestamp_ms=t, **values)  # type: ignore[arg-type]


def logged(e: common_pb2.Event, seq: int | None = None) -> profile_pb2.LoggedEvent:
    return profile_pb2.LoggedEvent(seq=next(_seq) if seq is None else seq, event=e, canonical_user_id=e.user_id)


def identity(customer: str, t: int = T0, first: bool = True) -> profile_pb2.LoggedEvent:
    return profile_pb2.LoggedEvent(seq=next(_seq), identity=profile_pb2.Identity(
        anonymous_id="anon-" + customer, customer_id=customer, identified_ms=t, first_registration=first),
        canonical_user_id=customer)


def erasure(user: str) -> profile_pb2.LoggedEvent:
    return profile_pb2.LoggedEvent(seq=next(_seq), erasure=profile_pb2.Erasure(user_id=user), canonical_user_id=user)


def change(product: str, *, stock: int = 5, previous_stock: int = 5, price: float = 10.0,
           previous_price: float = 10.0, t: int = T0, seq: int | None = None) -> recommend_pb2.CatalogChange:
    return recommend_pb2.CatalogChange(seq=next(_seq) if seq is None else seq, product_id=product, stock=stock,
                                       previous_stock=previous_stock, price=price, previous_price=previous_price,
                                       changed_ms=t)
