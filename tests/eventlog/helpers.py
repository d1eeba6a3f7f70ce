"""Events and stores for the event-log tests."""

from __future__ import annotations

import time
from pathlib import Path

from services.profile.store import LmdbProfileStore
from vitrine.v1 import common_pb2, profile_pb2

CATEGORIES = ("shoes", "bags", "hats")
BASE_MS = int(time.time() * 1000) - 10_000_000  # fixed per run: event(i) is the same event each call


def event(i: int, users: int = 7) -> common_pb2.Event:
    kind = (common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART, common_pb2.PURCHASE)[i % 3]
    e = common_pb2.Event(event_id=f"e{i}", user_id=f"shopper-{i % users}", session_id=f"s{i // 20}", type=kind,
                         timestamp_ms=BASE_MS + i * 1000, product_id=f"p{i % 11}",
                         category=CATEGORIES[i % 3])
    if kind == common_pb2.PURCHASE:
        e.price, e.order_id = 10.0 + i % 5, f"o{i}"
    return e


def logged(e: common_pb2.Event) -> profile_pb2.LoggedEvent:
    item = profile_pb2.LoggedEvent(canonical_user_id=e.user_id)
    item.event.CopyFrom(e)
    return item


def open_store(path: Path) -> LmdbProfileStore:
    return LmdbProfileStore(path, map_size_mb=64, sync=True)


def profiles(store: LmdbProfileStore) -> dict[str, bytes]:
    """Every stored profile, serialized (equal bytes: equal profiles)."""
    return {p.profile.user_id: p.SerializeToString(deterministic=True) for p in store.scan_profiles("", 10_000)}
