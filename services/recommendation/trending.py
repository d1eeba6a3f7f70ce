"""Trending: candidates by time-decayed popularity, overall (a cached ranked pool) or per category.

The overall top `TRENDING_POOL` is cached. Up to `TRENDING_INLINE_MAX_ITEMS` products a request
re-ranks it whenever a count changed; above that the service refreshes it in a worker thread every
`TRENDING_REFRESH_MS` (`compute` is safe there: it reads a copy of the counts) and requests may see
a ranking up to that old.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.recommendation.candidates import SRC_TRENDING, Candidates
from services.recommendation.catalog import Catalog
from services.recommendation.config import TRENDING_INLINE_MAX_ITEMS, TRENDING_POOL, TRENDING_REFRESH_MS
from services.recommendation.signals import Signals, now_ms


@dataclass(frozen=True)
class TrendingCache:
    version: int
    total: int
    at_ms: int
    rows: np.ndarray
    scores: np.ndarray


class Trending:
    def __init__(self, catalog: Catalog, signals: Signals) -> None:
        self.catalog = catalog
        self.signals = signals
        self._cache: TrendingCache | None = None

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Decayed popularity of `rows`, divided by the largest among them (float64, in [0, 1])."""
        values = self.signals.trending.items
        out = np.zeros(rows.size, np.float64)
        ok = rows < values.size
        out[ok] = values[rows[ok]]
        top = out.max(initial=0.0)
        return out / top if top > 0 else out

    def candidates(self, categories: tuple[str, ...], n: int) -> Candidates:
        """Top n by decayed popularity (overall, or among `categories`), scores in [0, 1]."""
        cat = self.catalog
        total = len(cat)
        if categories:
            ids = cat.category_ids(categories)
            pools = [cat.category_rows(int(c)) for c in ids if c >= 0]
            pool = np.concatenate(pools) if pools else np.zeros(0, np.int64)
            scores = self.scores(pool)
            take = min(n, pool.size)
            part = np.argpartition(-scores, take - 1)[:take] if take < pool.size else np.arange(pool.size)
            order = part[np.lexsort((pool[part], -scores[part]))]
            rows, scores = pool[order], scores[order]
            complete = take >= pool.size
        else:
            rows, scores = self.top(min(n, total))
            complete = n >= total
        return Candidates(rows.astype(np.int64), scores.astype(np.float32),
                          np.full(rows.size, SRC_TRENDING, np.int8), complete)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n most popular rows, cached. Small catalogs re-rank whenever a count changed; above
        TRENDING_INLINE_MAX_ITEMS the cache may be up to TRENDING_REFRESH_MS old (the service
        refreshes it in a worker thread), unless it is too short or the catalog grew."""
        counter = self.signals.trending
        total = len(self.catalog)
        c = self._cache
        if (c is not None and n <= c.rows.size and c.total == total
                and (c.version == counter.version
                     or (total > TRENDING_INLINE_MAX_ITEMS and now_ms() - c.at_ms < TRENDING_REFRESH_MS))):
            return c.rows[:n], c.scores[:n]
        self._cache = c = self.compute(n)
        return c.rows[:n], c.scores[:n]

    def is_stale(self) -> bool:
        c = self._cache
        return c is None or c.version != self.signals.trending.version or c.total != len(self.catalog)

    def compute(self, n: int = 0) -> TrendingCache:
        """Rank the trending pool (safe in a worker thread: it reads a copy of the counts)."""
        counter = self.signals.trending
        version, total, now = counter.version, len(self.catalog), now_ms()
        size = max(n, min(TRENDING_POOL, total))
        values = counter.values(counter.ref_ms, total)
        part = np.argpartition(-values, size - 1)[:size] if 0 < size < total else np.arange(total)
        order = part[np.lexsort((part, -values[part]))]
        top = values[order[0]] if order.size and values[order[0]] > 0 else 1.0
        return TrendingCache(version, total, now, order.astype(np.int64), values[order] / top)

    def install(self, cache: TrendingCache) -> None:
        """Use a ranking computed off the loop, unless the catalog grew meanwhile."""
        if cache.total == len(self.catalog):
            self._cache = cache
