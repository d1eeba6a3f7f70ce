"""Real-time signals from `Observe`: trending counts and bought-together pairs, with snapshots.

- Trending: every PRODUCT_VIEW / ADD_TO_CART / PURCHASE adds its weight to a time-decayed
  counter (`scoring.popularity.DecayingCounter`) of the product and of its category.
- Bought together: a PURCHASE pairs its product with the products already bought in the same
  order (CO_PURCHASE_WEIGHT); an ADD_TO_CART pairs it with the products already added in the
  same session of the same user (CO_CART_WEIGHT). Open orders and sessions are remembered in
  bounded LRU maps; repeated event ids are ignored.
- Snapshot: `<data_dir>/recommendation/signals.npz`, keyed by product id (catalog rows are
  not stable across restarts), written periodically and at stop.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

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

SNAPSHOT_FILE = "signals.npz"

WEIGHTS = {
    common_pb2.PRODUCT_VIEW: VIEW_WEIGHT,
    common_pb2.ADD_TO_CART: CART_WEIGHT,
    common_pb2.PURCHASE: PURCHASE_WEIGHT,
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ObserveResult:
    observed: int = 0
    ignored: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


class _Lru(OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: object, default: object) -> object:
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
        self._orders = _Lru(MAX_OPEN_BASKETS)
        self._carts = _Lru(MAX_OPEN_BASKETS)
        self._seen = _Lru(SEEN_EVENT_IDS)

    def observe(self, event: common_pb2.Event, row: int, category: int) -> bool:
        """Count one validated product event (`row` = catalog row); False if it was a repeat."""
        if event.event_id:
            if event.event_id in self._seen:
                return False
            self._seen.touch(event.event_id, True)
        now = now_ms()
        t = event.timestamp_ms if 0 < event.timestamp_ms <= now + MAX_CLOCK_SKEW_MS else now
        quantity = max(1, event.quantity)
        weight = WEIGHTS[event.type] * (quantity if event.type == common_pb2.PURCHASE else 1)
        self.trending.add(np.array([row]), np.array([t]), weight, np.array([category]))
        if event.type == common_pb2.PURCHASE and event.order_id:
            basket = self._orders.touch((event.user_id, event.order_id), [])
            self._pair(basket, row, CO_PURCHASE_WEIGHT)  # type: ignore[arg-type]
        elif event.type == common_pb2.ADD_TO_CART:
            basket = self._carts.touch((event.user_id, event.session_id), [])
            self._pair(basket, row, CO_CART_WEIGHT)  # type: ignore[arg-type]
        return True

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
    def snapshot(self, ids: list[str]) -> dict[str, object]:
        """Copies of the counters (on the event loop: it reads live dicts); `write` turns rows into ids."""
        n = min(len(ids), self.trending.items.size)
        rows, cols, weights = self.together.to_arrays()
        return {"ids": ids[:n], "trending": self.trending.items[:n].copy(),
                "meta": np.array([self.trending.half_life_ms, float(self.trending.ref_ms)]),
                "rows": rows, "cols": cols, "pair_w": weights}

    @staticmethod
    def write(path: Path, snap: dict[str, object]) -> None:
        """Write a snapshot atomically, keyed by product id (blocking: call off the loop)."""
        ids: list[str] = snap["ids"]  # type: ignore[assignment]
        id_array = np.asarray(ids, dtype=str) if ids else np.zeros(0, dtype="<U1")
        rows: np.ndarray = snap["rows"]  # type: ignore[assignment]
        cols: np.ndarray = snap["cols"]  # type: ignore[assignment]
        keep = (rows < id_array.size) & (cols < id_array.size)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ids=id_array, trending=snap["trending"], meta=snap["meta"],
                 pair_a=id_array[rows[keep]] if keep.any() else np.zeros(0, "<U1"),
                 pair_b=id_array[cols[keep]] if keep.any() else np.zeros(0, "<U1"),
                 pair_w=np.asarray(snap["pair_w"])[keep])
        os.replace(tmp, path)

    def load(self, path: Path, row_of: dict[str, int]) -> None:
        """Restore a snapshot written by `save` (ids unknown to the catalog are dropped)."""
        if not path.exists():
            return
        with np.load(path) as data:
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
