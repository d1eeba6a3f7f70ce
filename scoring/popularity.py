"""Time-decayed popularity counters on NumPy arrays (trending, overall and per category).

A count added at time t is worth weight * 2 ** (-(now - t) / half_life) at time `now`.
Instead of decaying every counter on every tick, values are stored scaled to a reference
time `ref_ms`: adding at t adds weight * 2 ** ((t - ref_ms) / half_life). Reading at `now`
multiplies everything by the same factor 2 ** ((ref_ms - now) / half_life), so rankings need
no rescaling at all. When the stored scale grows large the arrays are rescaled once and
`ref_ms` moves forward (no overflow, no precision loss).
"""

from __future__ import annotations

import numpy as np

RESCALE_EXPONENT = 40.0  # rescale when stored values carry a factor above 2**40


class DecayingCounter:
    """One decayed count per item (int index), grown on demand, plus one per category."""

    def __init__(self, half_life_ms: float, n_items: int = 0, n_categories: int = 0, *, ref_ms: int = 0) -> None:
        if half_life_ms <= 0:
            raise ValueError("half_life_ms must be > 0")
        self.half_life_ms = float(half_life_ms)
        self.ref_ms = int(ref_ms)
        self.items = np.zeros(max(n_items, 0), np.float64)
        self.categories = np.zeros(max(n_categories, 0), np.float64)
        self.version = 0  # bumped on every change; lets readers cache rankings

    def _grow(self, n_items: int, n_categories: int) -> None:
        if n_items > self.items.size:
            grown = np.zeros(max(n_items, 2 * self.items.size), np.float64)
            grown[: self.items.size] = self.items
            self.items = grown
        if n_categories > self.categories.size:
            grown = np.zeros(max(n_categories, 2 * self.categories.size), np.float64)
            grown[: self.categories.size] = self.categories
            self.categories = grown

    def _scale(self, t_ms: np.ndarray) -> np.ndarray:
        return np.exp2((t_ms - self.ref_ms) / self.half_life_ms)

    def add(self, items: np.ndarray, times_ms: np.ndarray, weights: np.ndarray | float = 1.0,
            categories: np.ndarray | None = None) -> None:
        """Count `items` (int) seen at `times_ms` with `weights`; `categories` (int, -1 = none) too."""
        items = np.asarray(items, np.int64).ravel()
        if items.size == 0:
            return
        times = np.asarray(times_ms, np.float64).ravel()
        if self.ref_ms == 0:
            self.ref_ms = int(times.min())
        newest = float(times.max())
        if (newest - self.ref_ms) / self.half_life_ms > RESCALE_EXPONENT:
            self.rescale(int(newest))
        w = np.broadcast_to(np.asarray(weights, np.float64), items.shape) * self._scale(times)
        cats = None if categories is None else np.asarray(categories, np.int64).ravel()
        self._grow(int(items.max()) + 1, 0 if cats is None or cats.size == 0 else int(cats.max()) + 1)
        np.add.at(self.items, items, w)
        if cats is not None:
            ok = cats >= 0
            np.add.at(self.categories, cats[ok], w[ok])
        self.version += 1

    def rescale(self, ref_ms: int) -> None:
        """Move the reference time to `ref_ms` (values keep their meaning)."""
        factor = 2.0 ** ((self.ref_ms - ref_ms) / self.half_life_ms)
        self.items *= factor
        self.categories *= factor
        self.ref_ms = int(ref_ms)

    def values(self, now_ms: int, n_items: int | None = None) -> np.ndarray:
        """Decayed counts at `now_ms` (a new array; `n_items` pads or cuts to that length)."""
        factor = 2.0 ** ((self.ref_ms - now_ms) / self.half_life_ms)
        out = self.items * factor
        if n_items is not None:
            out = np.pad(out, (0, max(0, n_items - out.size)))[:n_items]
        return out

    def category_values(self, now_ms: int) -> np.ndarray:
        return self.categories * 2.0 ** ((self.ref_ms - now_ms) / self.half_life_ms)

    def top(self, n: int, *, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The `n` items with the highest counts (relative scale), best first: (items, scores).

        `among` limits the choice to those item indices (e.g. one category). Items never
        counted score 0 and come last, in index order.
        """
        pool = np.arange(self.items.size) if among is None else np.asarray(among, np.int64)
        pool = pool[pool < self.items.size] if among is not None else pool
        scores = self.items[pool]
        n = min(n, pool.size)
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        part = np.argpartition(-scores, n - 1)[:n] if n < pool.size else np.arange(pool.size)
        order = part[np.lexsort((pool[part], -scores[part]))]
        return pool[order], scores[order]

    def state(self) -> dict[str, np.ndarray]:
        return {"items": self.items, "categories": self.categories,
                "meta": np.array([self.half_life_ms, float(self.ref_ms)])}
