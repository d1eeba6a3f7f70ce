"""Population RFM quantiles without rescanning profiles: bucket counts updated per change.

Every buyer is counted once in three histograms: the UTC day of their last purchase
(recency; stored as a day so the histogram does not age), their number of orders and
their total spend (log-spaced buckets). Each profile change moves a buyer from the old
buckets to the new ones; the counts live in LMDB's meta DB and are written in the same
transaction as the profiles, so they stay consistent across crashes. A score is the
buyer's mid-rank percentile in the population mapped to 1..5 (5 = most recent, most
frequent, highest spend); boundaries are recomputed at most once per RFM_REFRESH_SECONDS.
"""

from __future__ import annotations

import bisect
import math
import struct
import threading
import time
from collections.abc import Iterable

from services.profile.config import RFM_REFRESH_SECONDS

F_BUCKETS = 128
M_BUCKETS = 256
_COUNT = struct.Struct("<q")
PREFIX = b"rfm:"

Key = tuple[int, int, float]  # (last purchase day, orders, spend)


def f_bucket(orders: int) -> int:
    if orders < 64:
        return orders
    return min(F_BUCKETS - 1, 64 + int(math.log2(orders / 64) * 8))


def m_bucket(spend: float) -> int:
    return min(M_BUCKETS - 1, max(0, int(math.log2(1.0 + max(spend, 0.0)) * 8)))


def _score(below: int, same: int, total: int) -> int:
    if total <= 0:
        return 3
    p = (below + 0.5 * same) / total
    return min(5, 1 + int(p * 5))


class RfmSketch:
    """Histograms of the buyer population; `delta` while writing, `score` while reading."""

    def __init__(self) -> None:
        self.r: dict[int, int] = {}
        self.f = [0] * F_BUCKETS
        self.m = [0] * M_BUCKETS
        self.total = 0
        self._lock = threading.Lock()
        self._cache: tuple[list[int], list[int], list[int], list[int], int] | None = None
        self._cache_time = 0.0
        self._version = 0
        self._cache_version = -1

    # -- persistence -------------------------------------------------------------------------
    @staticmethod
    def bucket_keys(key: Key) -> tuple[bytes, bytes, bytes]:
        day, orders, spend = key
        return (b"rfm:r:%d" % day, b"rfm:f:%d" % f_bucket(orders), b"rfm:m:%d" % m_bucket(spend))

    def load(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        for k, v in items:
            _, kind, index = k.split(b":")
            count = _COUNT.unpack(v)[0]
            if kind == b"r":
                self.r[int(index)] = count
            elif kind == b"f":
                self.f[int(index)] = count
            elif kind == b"m":
                self.m[int(index)] = count
        self.total = sum(self.f)
        self._version += 1

    def pending(self, changes: Iterable[tuple[Key | None, Key | None]]) -> dict[bytes, int]:
        """Bucket deltas for (old, new) pairs, keyed by their meta key; nothing is changed yet."""
        deltas: dict[bytes, int] = {}
        for old, new in changes:
            if old == new:
                continue
            if old is not None:
                for k in self.bucket_keys(old):
                    deltas[k] = deltas.get(k, 0) - 1
            if new is not None:
                for k in self.bucket_keys(new):
                    deltas[k] = deltas.get(k, 0) + 1
        return {k: d for k, d in deltas.items() if d}

    def current(self, meta_key: bytes) -> int:
        _, kind, index = meta_key.split(b":")
        i = int(index)
        if kind == b"r":
            return self.r.get(i, 0)
        return (self.f if kind == b"f" else self.m)[i]

    def encode(self, count: int) -> bytes:
        return _COUNT.pack(count)

    def commit(self, deltas: dict[bytes, int]) -> None:
        """Apply deltas once their transaction is durable."""
        if not deltas:
            return
        with self._lock:
            for meta_key, d in deltas.items():
                _, kind, index = meta_key.split(b":")
                i = int(index)
                if kind == b"r":
                    value = self.r.get(i, 0) + d
                    if value:
                        self.r[i] = value
                    else:
                        self.r.pop(i, None)
                elif kind == b"f":
                    self.f[i] += d
                    self.total += d
                else:
                    self.m[i] += d
            self._version += 1

    # -- scoring -----------------------------------------------------------------------------
    def _cumulative(self) -> tuple[list[int], list[int], list[int], list[int], int]:
        now = time.monotonic()
        cache = self._cache
        if cache is not None and (self._version == self._cache_version or now - self._cache_time < RFM_REFRESH_SECONDS):
            return cache
        with self._lock:
            days = sorted(self.r)
            r_cum, acc = [], 0
            for d in days:
                r_cum.append(acc)
                acc += self.r[d]
            f_cum, acc = [], 0
            for c in self.f:
                f_cum.append(acc)
                acc += c
            m_cum, acc = [], 0
            for c in self.m:
                m_cum.append(acc)
                acc += c
            cache = (days, r_cum, f_cum, m_cum, self.total)
            self._cache, self._cache_time, self._cache_version = cache, now, self._version
        return cache

    def score(self, day: int, orders: int, spend: float) -> tuple[int, int, int]:
        days, r_cum, f_cum, m_cum, total = self._cumulative()
        if total <= 0:
            return 3, 3, 3
        i = bisect.bisect_left(days, day)
        if i < len(days) and days[i] == day:
            r_below = r_cum[i]
            r_same = (r_cum[i + 1] if i + 1 < len(days) else total) - r_below
        else:
            r_below, r_same = (r_cum[i] if i < len(days) else total), 0
        fb, mb = f_bucket(orders), m_bucket(spend)
        f_same = (f_cum[fb + 1] if fb + 1 < F_BUCKETS else total) - f_cum[fb]
        m_same = (m_cum[mb + 1] if mb + 1 < M_BUCKETS else total) - m_cum[mb]
        return (_score(r_below, r_same, total), _score(f_cum[fb], f_same, total), _score(m_cum[mb], m_same, total))
