"""Re-ranking of retrieved candidates under inventory, price, budget, category and diversity rules.

One Numba kernel, `_rerank_kernel`, is called once per request with arrays: the candidates'
catalog rows and retrieval scores, the catalog's columns (stock, price, category) and the
request's rules. It removes what must not be shown, adjusts scores with the shopper's
signals (category boost, budget demotion), sorts, applies `max_per_category` greedily and
returns the top k as positions into the candidate array, with a score and a reason code.

`rerank` is the public wrapper (validates dtypes, shapes and contiguity, allocates outputs);
`rerank_reference` is the slow, obvious NumPy version of the same function, used by the
agreement tests and the benchmark.

Rules, in order (a candidate failing one is dropped):
1. row < 0 (an index returned no result); a repeated row counts once, at its best score;
2. stock <= 0 unless `include_out_of_stock`;
3. price < min_price (min_price > 0), price > max_price (max_price > 0);
4. category not in `include_categories` (when non-empty) or in `exclude_categories`;
5. row in `excluded` (sorted: given ids, purchased, anchor, cart ...).
Score = base + category_boost[category] (categories outside the boost array get 0); then,
if budget > 0 and price > budget * budget_tolerance, the score is demoted by the factor
(budget * budget_tolerance / price) ** 2 (divided by it for negative scores, so a demotion
always lowers). Ties keep retrieval order (stable sort). Then candidates are taken best
first, skipping those whose category already has `max_per_category` picks (0 = no bound).

Reason codes (the service turns them into text): REASON_STRATEGY (the strategy's own
reason), REASON_CATEGORY (the category boost made up at least REASON_CATEGORY_MIN of the
score), REASON_BUDGET (budget known and the price within it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types

REASON_STRATEGY = 0
REASON_CATEGORY = 1
REASON_BUDGET = 2
REASON_CATEGORY_MIN = 0.05  # boost this large (score units) names the category as the reason

DEFAULT_BUDGET_TOLERANCE = 1.5  # prices up to budget * 1.5 are not demoted

_SIGNATURE = types.int64(
    types.int64[::1],    # cand: catalog rows, retrieval order
    types.float32[::1],  # base: retrieval scores
    types.int32[::1],    # stock column
    types.float64[::1],  # price column
    types.int32[::1],    # category column
    types.int64[::1],    # excluded rows, sorted
    types.int32[::1],    # include categories, sorted (empty = all)
    types.int32[::1],    # exclude categories, sorted
    types.float32[::1],  # category boost per category id
    types.boolean,       # include_out_of_stock
    types.float64,       # min_price (0 = none)
    types.float64,       # max_price (0 = none)
    types.float64,       # budget (0 = unknown)
    types.float64,       # budget tolerance
    types.int64,         # max_per_category (0 = none)
    types.int64,         # n_categories (for diversity counts)
    types.int64[::1],    # out positions (len k)
    types.float64[::1],  # out scores
    types.int8[::1],     # out reasons
)


@njit(inline="always")
def _contains(sorted_values, value):  # type: ignore[no-untyped-def]
    lo = 0
    hi = sorted_values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < sorted_values.shape[0] and sorted_values[lo] == value


@njit(cache=True, nogil=True)
def _order_desc(score, idx):  # type: ignore[no-untyped-def]
    """`idx` sorted by score[idx] descending, ties in the given order (stable merge sort)."""
    n = idx.shape[0]
    a = idx.copy()
    if n < 2:
        return a
    if n <= 32:
        for i in range(1, n):
            v = a[i]
            sv = score[v]
            j = i - 1
            while j >= 0 and score[a[j]] < sv:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = v
        return a
    b = np.empty_like(a)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, t = lo, mid, lo
            while i < mid and j < hi:
                if score[a[j]] > score[a[i]]:
                    b[t] = a[j]
                    j += 1
                else:
                    b[t] = a[i]
                    i += 1
                t += 1
            while i < mid:
                b[t] = a[i]
                i += 1
                t += 1
            while j < hi:
                b[t] = a[j]
                j += 1
                t += 1
        a, b = b, a
        width *= 2
    return a


@njit(_SIGNATURE, cache=True, nogil=True)
def _rerank_kernel(cand, base, stock, price, category, excluded, include_cats, exclude_cats, boost,
                   include_out_of_stock, min_price, max_price, budget, tolerance, max_per_category,
                   n_categories, out_pos, out_score, out_reason):  # type: ignore[no-untyped-def]
    n = cand.shape[0]
    k = out_pos.shape[0]
    keep = np.empty(n, np.int64)
    score = np.empty(n, np.float64)
    reason = np.empty(n, np.int8)
    m = 0
    limit = budget * tolerance
    for i in range(n):
        row = cand[i]
        if row < 0 or row >= stock.shape[0]:
            continue
        if not include_out_of_stock and stock[row] <= 0:
            continue
        p = price[row]
        if min_price > 0.0 and p < min_price:
            continue
        if max_price > 0.0 and p > max_price:
            continue
        c = category[row]
        if include_cats.shape[0] > 0 and not _contains(include_cats, c):
            continue
        if _contains(exclude_cats, c):
            continue
        if _contains(excluded, row):
            continue
        s = np.float64(base[i])
        b = 0.0
        if c >= 0 and c < boost.shape[0]:
            b = np.float64(boost[c])
        s = s + b
        if budget > 0.0 and p > limit:
            q = limit / p
            f = q * q
            s = s * f if s >= 0.0 else s / f
        r = REASON_STRATEGY
        if b >= REASON_CATEGORY_MIN:
            r = REASON_CATEGORY
        elif budget > 0.0 and p <= budget:
            r = REASON_BUDGET
        keep[m] = i
        score[m] = s
        reason[m] = r
        m += 1
    # Sort only the best `span` scores (a partition finds the threshold) unless that is most of
    # them; widen when diversity or repeats leave fewer than k.
    taken_category = np.empty(k, np.int32)
    span = min(m, max(4 * k, 64))
    taken = 0
    while True:
        if 2 * span < m:
            threshold = np.partition(score[:m].copy(), m - span)[m - span]
            order = _order_desc(score, np.flatnonzero(score[:m] >= threshold))
        else:
            span = m
            order = _order_desc(score, np.arange(m))
        taken = 0
        for t in range(order.shape[0]):
            if taken >= k:
                break
            j = order[t]
            row = cand[keep[j]]
            c = category[row]
            if c < 0 or c >= n_categories:
                c = -1
            same_category = 0
            dup = False
            for u in range(taken):
                if cand[out_pos[u]] == row:
                    dup = True
                    break
                if taken_category[u] == c:
                    same_category += 1
            if dup or (max_per_category > 0 and same_category >= max_per_category):
                continue
            out_pos[taken] = keep[j]
            out_score[taken] = score[j]
            out_reason[taken] = reason[j]
            taken_category[taken] = c
            taken += 1
        if taken >= k or span >= m:
            break
        span = min(m, span * 4)
    return taken


class Ranked(NamedTuple):
    positions: np.ndarray  # int64 positions into the candidate array, best first
    scores: np.ndarray     # float64
    reasons: np.ndarray    # int8 REASON_* codes


_EMPTY = {np.int64: np.zeros(0, np.int64), np.int32: np.zeros(0, np.int32)}
_NO_BOOST = np.zeros(0, np.float32)


_I64, _I32, _F32, _F64 = np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float64)


def _vector(values: object, dtype: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
    """`values` as a C-contiguous 1-D array of `dtype`, without a copy when it already is one."""
    if type(values) is np.ndarray and values.dtype is dtype and values.ndim == 1 and values.flags.c_contiguous:
        return values
    return np.ascontiguousarray(values, dtype=dtype).ravel()


def _sorted(values: np.ndarray | None, dtype: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
    if values is None or len(values) == 0:
        return _EMPTY[dtype.type]
    return np.sort(_vector(values, dtype))


def _column(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
    if value.dtype != dtype or value.ndim != 1 or not value.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous 1-D {dtype.name} array")
    return value


def rerank(candidates: np.ndarray, scores: np.ndarray, *, stock: np.ndarray, price: np.ndarray,
           category: np.ndarray, k: int, excluded: np.ndarray | None = None,
           include_categories: np.ndarray | None = None, exclude_categories: np.ndarray | None = None,
           category_boost: np.ndarray | None = None, include_out_of_stock: bool = False,
           min_price: float = 0.0, max_price: float = 0.0, budget: float = 0.0,
           budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE, max_per_category: int = 0,
           n_categories: int | None = None) -> Ranked:
    """Top `k` of `candidates` (catalog rows) under the rules in the module docstring.

    `stock` (int32), `price` (float64) and `category` (int32) are the catalog's columns,
    indexed by row, passed as they are (C-contiguous, no copy). Candidates and scores are
    converted if needed; `excluded` rows and category lists may be in any order.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    stock = _column("stock", stock, _I32)
    price = _column("price", price, _F64)
    category = _column("category", category, _I32)
    cand = _vector(candidates, _I64)
    base = _vector(scores, _F32)
    if cand.shape[0] != base.shape[0]:
        raise ValueError("candidates and scores must have the same length")
    if not (stock.shape[0] == price.shape[0] == category.shape[0]):
        raise ValueError("stock, price and category columns must have the same length")
    boost = _NO_BOOST if category_boost is None else _vector(category_boost, _F32)
    if n_categories is None:
        n_categories = int(category.max()) + 1 if category.size else 0
    out_pos = np.empty(k, np.int64)
    out_score = np.empty(k, np.float64)
    out_reason = np.empty(k, np.int8)
    taken = _rerank_kernel(
        cand, base, stock, price, category, _sorted(excluded, _I64), _sorted(include_categories, _I32),
        _sorted(exclude_categories, _I32), boost, bool(include_out_of_stock), float(min_price),
        float(max_price), float(budget), float(budget_tolerance), int(max_per_category), int(n_categories),
        out_pos, out_score, out_reason,
    )
    return Ranked(out_pos[:taken], out_score[:taken], out_reason[:taken])


def rerank_reference(candidates: np.ndarray, scores: np.ndarray, *, stock: np.ndarray, price: np.ndarray,
                     category: np.ndarray, k: int, excluded: np.ndarray | None = None,
                     include_categories: np.ndarray | None = None,
                     exclude_categories: np.ndarray | None = None,
                     category_boost: np.ndarray | None = None, include_out_of_stock: bool = False,
                     min_price: float = 0.0, max_price: float = 0.0, budget: float = 0.0,
                     budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE, max_per_category: int = 0,
                     n_categories: int | None = None) -> Ranked:
    """The same function as `rerank`, written plainly in NumPy (masks, then a loop for diversity)."""
    cand = np.asarray(candidates, dtype=np.int64).ravel()
    base = np.asarray(scores, dtype=np.float32).astype(np.float64)
    positions = np.arange(cand.size)
    ok = (cand >= 0) & (cand < stock.size)
    rows = np.where(ok, cand, 0)
    p = price[rows]
    c = category[rows].astype(np.int64)
    if not include_out_of_stock:
        ok &= stock[rows] > 0
    if min_price > 0:
        ok &= p >= min_price
    if max_price > 0:
        ok &= p <= max_price
    if include_categories is not None and len(include_categories):
        ok &= np.isin(c, np.asarray(include_categories))
    if exclude_categories is not None and len(exclude_categories):
        ok &= ~np.isin(c, np.asarray(exclude_categories))
    if excluded is not None and len(excluded):
        ok &= ~np.isin(cand, np.asarray(excluded))
    keep = ok
    boost_arr = np.zeros(0, np.float32) if category_boost is None else np.asarray(category_boost, np.float32)
    b = np.zeros(cand.size)
    has = (c >= 0) & (c < boost_arr.size)
    b[has] = boost_arr[c[has]].astype(np.float64)
    s = base + b
    limit = budget * budget_tolerance
    if budget > 0:
        over = p > limit
        f = np.ones(cand.size)
        f[over] = (limit / p[over]) ** 2
        s = np.where(over & (s >= 0), s * f, np.where(over, s / f, s))
    reason = np.full(cand.size, REASON_STRATEGY, np.int8)
    if budget > 0:
        reason[p <= budget] = REASON_BUDGET
    reason[b >= REASON_CATEGORY_MIN] = REASON_CATEGORY
    idx = positions[keep]
    order = idx[np.argsort(-s[idx], kind="stable")]
    if n_categories is None:
        n_categories = int(category.max()) + 1 if category.size else 0
    counts: dict[int, int] = {}
    out: list[int] = []
    taken_rows: set[int] = set()
    for j in order:
        if len(out) >= k:
            break
        if int(cand[j]) in taken_rows:
            continue
        if max_per_category > 0:
            cat = int(c[j]) if 0 <= c[j] < n_categories else -1
            if counts.get(cat, 0) >= max_per_category:
                continue
            counts[cat] = counts.get(cat, 0) + 1
        out.append(int(j))
        taken_rows.add(int(cand[j]))
    pos = np.asarray(out, dtype=np.int64)
    return Ranked(pos, s[pos], reason[pos])
