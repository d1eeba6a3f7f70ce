"""Real-time signals: trending counts and bought-together pairs, with snapshots.

- Trending: every PRODUCT_VIEW / ADD_TO_CART / PURCHASE adds its weight to a time-decayed
  counter (`scoring.popularity.DecayingCounter`) of the product and of its category.
- Bought together: a PURCHASE pairs its product with the products already bought in the same
  order (CO_PURCHASE_WEIGHT); an ADD_TO_CART pairs it with the products already added in the
  same session of the same user (CO_CART_WEIGHT). Open orders and sessions ("baskets", the only
  per-shopper data here) are remembered in bounded LRU maps; repeated event ids are ignored.
- Events come from the profile shards' `FollowEvents` feeds (`feed.py`) and, until the gateway
  stops sending them, from `Observe`; the event-id memory keeps an event that arrives both ways
  from counting twice.
- Snapshot: counters, pairs, baskets and the event-id memory, keyed by product id (catalog rows are
  not stable across restarts), encoded as one `.npz` blob. The service keeps it in its LMDB
  (`store.py`) with each feed's cursor in the same transaction, so after a restart the state and the
  cursors agree and the feeds resume exactly where the saved state ends.
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from scoring.cooccurrence import CoOccurrence
from scoring.popularity import DecayingCounter
from services.recommendation.config import (
    CART_WEIGHT,
    CO_CART_WEIGHT,
    CO_PURCHASE_WEIGHT,
    MAX_BASKET_ITEMS,
    MAX_CLOCK_SKEW_MS,
    MAX_OPEN_BASKETS,
    PURCHASE_WEIGHT,
    SEEN_EVENT_IDS,
    VIEW_WEIGHT,
)
from vitrine.v1 import common_pb2

SNAPSHOT_FILE = "signals.npz"   # where snapshots lived before they moved into LMDB (read once if present)
ORDER, CART = 0, 1               # basket kinds in a snapshot

WEIGHTS = {
    common_pb2.PRODUCT_VIEW: VIEW_WEIGHT,
    common_pb2.ADD_TO_CART: CART_WEIGHT,
    common_pb2.PURCHASE: PURCHASE_WEIGHT,
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Snapshot:
    """A copy of the signals with catalog rows (`Signals.encode` turns them into product ids)."""

    ids: list[str]                # product id of each trending row
    trending: np.ndarray          # float64 counts, scaled to meta[1]
    meta: np.ndarray              # [half_life_ms, ref_ms]
    rows: np.ndarray              # bought-together pairs: row a, row b, weight
    cols: np.ndarray
    pair_w: np.ndarray
    baskets: list[tuple[int, str, str, list[int]]]   # (ORDER | CART, user, order or session id, rows)
    seen: list[str]               # recent event ids, oldest first


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Basket = tuple[str, str]   # (shopper id, order or session id)


class _Lru(OrderedDict[K, V]):
    """A dict that forgets its least recently touched keys beyond `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: K, default: V) -> V:
        value = self.get(key)
        if value is None:
            value = self[key] = default
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class Signals:
    def __init__(self, half_life_ms: float) -> None:
        self.trending = DecayingCounter(half_life_ms)
        self.together = CoOccurrence()
        self._orders: _Lru[Basket, list[int]] = _Lru(MAX_OPEN_BASKETS)
        self._carts: _Lru[Basket, list[int]] = _Lru(MAX_OPEN_BASKETS)
        self._seen: _Lru[str, bool] = _Lru(SEEN_EVENT_IDS)

    def observe(self, event: common_pb2.Event, row: int, category: int, user: str = "") -> bool:
        """Count one validated product event (`row` = catalog row); False if it was a repeat.
        `user` keys the shopper's baskets (the canonical id from the feed; default the event's)."""
        return self.observe_many([(event, row, category, user)]) == 1

    def observe_many(self, batch: Sequence[tuple[common_pb2.Event, int, int, str]]) -> int:
        """`observe` for many events in order, with one update of the trending counters (a NumPy call
        per event cost more than the rest of the work); returns how many were counted (not repeats)."""
        rows: list[int] = []
        times: list[int] = []
        weights: list[float] = []
        categories: list[int] = []
        now = now_ms()
        for event, row, category, user in batch:
            if event.event_id:
                if event.event_id in self._seen:
                    continue
                self._seen.touch(event.event_id, True)
            rows.append(row)
            times.append(event.timestamp_ms if 0 < event.timestamp_ms <= now + MAX_CLOCK_SKEW_MS else now)
            quantity = max(1, event.quantity)
            weights.append(WEIGHTS[event.type] * (quantity if event.type == common_pb2.PURCHASE else 1))
            categories.append(category)
            user = user or event.user_id
            if event.type == common_pb2.PURCHASE and event.order_id:
                self._pair(self._orders.touch((user, event.order_id), []), row, CO_PURCHASE_WEIGHT)
            elif event.type == common_pb2.ADD_TO_CART:
                self._pair(self._carts.touch((user, event.session_id), []), row, CO_CART_WEIGHT)
        if rows:
            self.trending.add(np.asarray(rows, np.int64), np.asarray(times, np.int64),
                              np.asarray(weights, np.float64), np.asarray(categories, np.int64))
        return len(rows)

    def erase(self, users: Iterable[str]) -> int:
        """Forget the open baskets of `users` (an erasure); returns how many were dropped. The
        trending counts and pair weights are aggregates over everyone and hold no shopper id."""
        gone = {u for u in users if u}
        dropped = 0
        for baskets in (self._orders, self._carts):
            for key in [k for k in baskets if k[0] in gone]:
                del baskets[key]
                dropped += 1
        return dropped

    def merge_user(self, anonymous_id: str, customer_id: str) -> None:
        """An anonymous visitor logged in: their open baskets continue under the customer's id."""
        if not anonymous_id or not customer_id or anonymous_id == customer_id:
            return
        for baskets in (self._orders, self._carts):
            for key in [k for k in baskets if k[0] == anonymous_id]:
                rows = baskets.pop(key)
                target = baskets.touch((customer_id, key[1]), [])
                for row in rows:
                    if row not in target and len(target) < MAX_BASKET_ITEMS:
                        target.append(row)

    def basket_users(self) -> set[str]:
        """Every shopper id an open basket is kept under (tests, erasure checks)."""
        return {k[0] for baskets in (self._orders, self._carts) for k in baskets}

    def _pair(self, basket: list[int], row: int, weight: float) -> None:
        if row in basket:
            return
        self.together.add_group(row, basket, weight)
        if len(basket) < MAX_BASKET_ITEMS:
            basket.append(row)

    def rebuild_categories(self, category: np.ndarray) -> None:
        """Per-category totals from the item counts (category ids are not stable across restarts)."""
        n = min(category.size, self.trending.items.size)
        cats = category[:n]
        ok = cats >= 0
        totals = np.bincount(cats[ok], weights=self.trending.items[:n][ok], minlength=int(cats.max(initial=-1)) + 1)
        self.trending.categories = totals.astype(np.float64)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self, ids: list[str]) -> Snapshot:
        """Copies of the state (on the event loop: it reads live dicts); `encode` turns rows into ids."""
        n = min(len(ids), self.trending.items.size)
        rows, cols, weights = self.together.to_arrays()
        baskets = [(kind, user, key, list(items))
                   for kind, lru in ((ORDER, self._orders), (CART, self._carts))
                   for (user, key), items in lru.items()]
        return Snapshot(ids[:n], self.trending.items[:n].copy(),
                        np.array([self.trending.half_life_ms, float(self.trending.ref_ms)]),
                        rows, cols, weights, baskets, list(self._seen))

    @staticmethod
    def encode(snap: Snapshot, all_ids: list[str]) -> bytes:
        """A snapshot as one npz blob keyed by product id (blocking: call off the loop). `all_ids`
        names every catalog row (basket rows may lie beyond the trending counts)."""
        id_array = _strings(snap.ids)
        keep = (snap.rows < id_array.size) & (snap.cols < id_array.size)
        items = [all_ids[r] for b in snap.baskets for r in b[3] if r < len(all_ids)]
        sizes = [sum(1 for r in b[3] if r < len(all_ids)) for b in snap.baskets]
        out = io.BytesIO()
        np.savez(out, ids=id_array, trending=snap.trending, meta=snap.meta,
                 pair_a=id_array[snap.rows[keep]] if keep.any() else _strings([]),
                 pair_b=id_array[snap.cols[keep]] if keep.any() else _strings([]),
                 pair_w=snap.pair_w[keep],
                 basket_kind=np.asarray([b[0] for b in snap.baskets], np.int8),
                 basket_user=_strings([b[1] for b in snap.baskets]),
                 basket_key=_strings([b[2] for b in snap.baskets]),
                 basket_size=np.asarray(sizes, np.int64), basket_items=_strings(items), seen=_strings(snap.seen))
        return out.getvalue()

    def restore(self, blob: bytes | Path, row_of: dict[str, int]) -> None:
        """Load a snapshot from `encode` (or a legacy signals.npz); ids unknown to the catalog are dropped."""
        with np.load(io.BytesIO(blob) if isinstance(blob, bytes) else blob) as data:
            ids = data["ids"]
            rows = np.fromiter((row_of.get(str(p), -1) for p in ids), np.int64, len(ids))
            ok = rows >= 0
            self.trending.ref_ms = int(data["meta"][1])
            values = data["trending"][ok]
            if rows[ok].size:
                self.trending._grow(int(rows[ok].max()) + 1, 0)
                self.trending.items[rows[ok]] = values
            a = np.fromiter((row_of.get(str(p), -1) for p in data["pair_a"]), np.int64, len(data["pair_a"]))
            b = np.fromiter((row_of.get(str(p), -1) for p in data["pair_b"]), np.int64, len(data["pair_b"]))
            keep = (a >= 0) & (b >= 0)
            self.together = CoOccurrence.from_arrays(a[keep], b[keep], data["pair_w"][keep])
            if "basket_kind" not in data:  # a snapshot from before baskets were kept
                return
            at = 0
            items = data["basket_items"].tolist()
            for kind, user, key, size in zip(data["basket_kind"].tolist(), data["basket_user"].tolist(),
                                             data["basket_key"].tolist(), data["basket_size"].tolist(),
                                             strict=True):
                basket_rows = [row_of[p] for p in items[at:at + size] if p in row_of]
                at += size
                (self._orders if kind == ORDER else self._carts).touch((user, key), basket_rows)
            for event_id in data["seen"].tolist():
                self._seen.touch(event_id, True)


def _strings(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="<U1")
