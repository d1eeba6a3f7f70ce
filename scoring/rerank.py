"""Re-ranking of retrieved candidates under inventory, price, budget, category and diversity rules.

One Numba kernel, `_rerank_kernel`, is called once per request with arrays: the candidates'
catalog rows and retrieval scores, the catalog's columns (stock, price, category) and the
request's rules. It removes what must not be shown, adjusts scores with the shopper's
signals (category boost, budget demotion), sorts, applies `max_per_category` greedily and
returns the top k as positions into the candidate array, with a score and a reason code.

`rerank` is the public wrapper (converts request arrays when needed, allocates outputs, turns
the kernel's error codes into exceptions); the dispatcher's type check against the explicit
signature is the dtype / contiguity validation, and a failed one takes a slow path that names
the bad column. Nothing per call is O(catalog). `rerank_reference` is the plain NumPy version
of the same function, used by the agreement tests and the benchmark.

How the kernel spends its time (why it is shaped this way, each step measured): one pass over
the candidates that gathers the columns and filters without data-dependent branches; category
lists, then the budget demotion, in their own short passes; a bounded top-`span` selection
(span = k, widened x4 only when exclusions, repeats or `max_per_category` leave fewer than k),
and the excluded rows checked only for the ~k candidates the picks look at (a hash set).

Rules, in order (a candidate failing one is dropped):
1. row < 0 (an index returned no result); a repeated row counts once, at its best score;
2. stock <= 0 unless `include_out_of_stock`;
3. price < min_price (min_price > 0), price > max_price (max_price > 0);
4. category not in `include_categories` (when non-empty) or in `exclude_categories`;
5. row in `excluded` (any order: given ids, purchased, anchor, cart ...).
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
    types.int64[::1],    # sets: excluded rows, include categories, exclude categories (any order)
    types.float32[::1],  # category boost per category id
    types.int64[:, ::1],  # out (2, k): positions, reason codes
    types.float64[::1],  # out scores (len k)
    types.boolean,       # include_out_of_stock
    types.float64,       # min_price (0 = none)
    types.float64,       # max_price (0 = none)
    types.float64,       # budget (0 = unknown)
    types.float64,       # budget tolerance
    types.int64,         # max_per_category (0 = none)
    types.int64,         # n_categories (ids at or above it share one "no category" bucket)
    types.int64,         # how many of `sets` are excluded rows
    types.int64,         # how many of `sets` after those are include categories
)
# Why this shape: a call costs more in the dispatcher than in the kernel at a few hundred candidates.
# The dispatcher types every array argument (~0.2 us each) but a scalar in tens of nanoseconds, and
# boxing arrays returned from Numba costs more than `np.empty` in Python (both measured), so the three
# id lists travel in one array, scalars stay scalars, and the outputs are preallocated by the wrapper.

BAD_LENGTHS = -1  # kernel return code: candidates and scores differ in length
BAD_COLUMNS = -2  # kernel return code: the catalog columns differ in length
NO_CATEGORY_LIMIT = 1 << 62  # n_categories when not given: every id >= 0 is its own category


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier
_EMPTY_SLOT = np.iinfo(np.int64).min


@njit(inline="always")
def _slot(value, shift):
    return np.int64((np.uint64(value) * _GOLDEN) >> shift)


@njit(cache=True, nogil=True)
def _hash_set(values):
    """An open-addressing set of `values`, at most 1/4 full, so a lookup that misses (the usual
    case) reads one empty slot: cheaper than a binary search's unpredictable branches."""
    bits = 3
    while (1 << bits) < 4 * values.shape[0]:
        bits += 1
    table = np.full(1 << bits, _EMPTY_SLOT, np.int64)
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    for v in values:
        h = _slot(v, shift)
        while table[h] != _EMPTY_SLOT and table[h] != v:
            h = (h + 1) & mask
        table[h] = v
    return table, shift


@njit(inline="always")
def _in_set(table, shift, value):
    mask = table.shape[0] - 1
    h = _slot(value, shift)
    while table[h] != _EMPTY_SLOT:
        if table[h] == value:
            return True
        h = (h + 1) & mask
    return False


@njit(inline="always")
def _worse(score, a, b):
    """Candidate a ranks below b: a lower score, or the same score and later in retrieval order."""
    return score[a] < score[b] or (score[a] == score[b] and a > b)


@njit(inline="always")
def _sift_down(heap, size, i, score):
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _worse(score, heap[child + 1], heap[child]):
            child += 1
        if not _worse(score, heap[child], heap[i]):
            return
        heap[i], heap[child] = heap[child], heap[i]
        i = child


SMALL_SPAN = 64  # up to this many picks, a sorted buffer with insertion beats a heap (fewer mispredictions)


@njit(cache=True, nogil=True)
def _top(score, m, span):
    """Indices of the best `span` of score[:m], best first, ties in index order (the prefix a
    stable sort would give). Retrieval returns candidates roughly best first, so after the
    first `span` most candidates cost one comparison with the worst kept."""
    top = np.empty(span, np.int64)
    if span <= 0:
        return top
    if span > SMALL_SPAN:
        return _top_heap(score, m, span, top)
    kept = np.empty(span, np.float64)  # kept[i] = score[top[i]]: compares without an indirection
    worst = -np.inf
    size = 0
    for j in range(m):
        s = score[j]
        if size == span:
            if s <= worst:  # not better than the worst kept (ties: the earlier one wins)
                continue
            i = size - 1
        else:
            i = size
            size += 1
        while i > 0 and kept[i - 1] < s:  # shift the worse ones down one place
            top[i] = top[i - 1]
            kept[i] = kept[i - 1]
            i -= 1
        top[i] = j
        kept[i] = s
        worst = kept[size - 1]
    return top


@njit(cache=True, nogil=True)
def _top_heap(score, m, span, heap):
    """`_top` for large spans: a bounded min-heap, O(m log span) whatever the input order."""
    size = 0
    for j in range(m):
        if size < span:  # push, sift up
            i = size
            heap[i] = j
            size += 1
            while i > 0:
                parent = (i - 1) >> 1
                if not _worse(score, heap[i], heap[parent]):
                    break
                heap[i], heap[parent] = heap[parent], heap[i]
                i = parent
        elif _worse(score, heap[0], j):  # better than the worst kept: replace it
            heap[0] = j
            _sift_down(heap, size, 0, score)
    for end in range(size - 1, 0, -1):  # heap sort: the worst goes to the back
        heap[0], heap[end] = heap[end], heap[0]
        _sift_down(heap, end, 0, score)
    return heap


@njit(cache=True, nogil=True)
def _drop_categories(cand, category, include, exclude, keep, score, paid, m):
    """Compact keep/score/paid[:m] to candidates whose category the lists allow; the new m."""
    include_cats, in_shift = _hash_set(include)
    exclude_cats, xc_shift = _hash_set(exclude)
    kept = 0
    for j in range(m):
        c = np.int64(category[cand[keep[j]]])
        if include.shape[0] > 0 and not _in_set(include_cats, in_shift, c):
            continue
        if exclude.shape[0] > 0 and _in_set(exclude_cats, xc_shift, c):
            continue
        keep[kept] = keep[j]
        score[kept] = score[j]
        paid[kept] = paid[j]
        kept += 1
    return kept


@njit(_SIGNATURE, cache=True, nogil=True, error_model="numpy")
def _rerank_kernel(cand, base, stock, price, category, sets, boost, out, out_score, include_out_of_stock,
                   min_price, max_price, budget, tolerance, max_per_category, n_categories, n_excluded,
                   n_include):
    n = cand.shape[0]
    k = out_score.shape[0]
    if base.shape[0] != n or out.shape[1] != k:
        return BAD_LENGTHS
    n_rows = stock.shape[0]
    if price.shape[0] != n_rows or category.shape[0] != n_rows:
        return BAD_COLUMNS
    if n_rows == 0:
        return 0
    keep = np.empty(n, np.int64)     # survivors: position in the candidate array,
    score = np.empty(n, np.float64)  # adjusted score,
    paid = np.empty(n, np.float64)   # and price (reasons are worked out for the picks only)
    passed = np.empty(n, np.bool_)
    n_boost = boost.shape[0]
    # Short passes, each simple enough for LLVM to keep free of data-dependent branches (the stock,
    # price and budget tests are close to coin flips per candidate, and mispredictions, not loads,
    # dominated the single-loop version: 2-3x slower, measured). 1: gather the columns and test
    # them; stores go to slot i, so no store waits on an earlier candidate's loads (10-18 % faster
    # than compacting here, measured).
    for i in range(n):
        row = cand[i]
        ok = (row >= 0) & (row < n_rows)
        r0 = row if ok else 0
        p = price[r0]
        c = np.int64(category[r0])
        ok &= include_out_of_stock | (stock[r0] > 0)
        ok &= (min_price <= 0.0) | (p >= min_price)
        ok &= (max_price <= 0.0) | (p <= max_price)
        boosted = (c >= 0) & (c < n_boost)
        b = np.float64(boost[c if boosted else 0]) if boosted else 0.0
        passed[i] = ok
        score[i] = np.float64(base[i]) + b
        paid[i] = p
    m = 0
    for i in range(n):  # compact the survivors, always storing and advancing by the flag
        keep[m] = i
        score[m] = score[i]
        paid[m] = paid[i]
        m += passed[i]
    # 2: category lists (probe loops in pass 1 slowed every candidate). Excluded rows are left to
    # the picks below, which look at ~k candidates, not all of them.
    if sets.shape[0] > n_excluded:
        m = _drop_categories(cand, category, sets[n_excluded:n_excluded + n_include],
                             sets[n_excluded + n_include:], keep, score, paid, m)
    # 3: budget demotion, arithmetic only. At or below the limit the factor is exactly 1.
    if budget > 0.0:
        limit = budget * tolerance
        for j in range(m):
            p = paid[j]
            q = min(1.0, limit / p)
            f = q * q
            s = score[j]
            demoted = s * f
            divided = s / f  # negative scores are divided, so a demotion always lowers
            score[j] = demoted if s >= 0.0 else divided
    # Order only the best `span` (k at first); widen when exclusions, diversity or repeats leave
    # fewer than k.
    if m == 0 or k == 0:
        return 0
    taken_category = np.empty(k, np.int64)
    taken_row = np.empty(k, np.int64)
    excluded, ex_shift = _hash_set(sets[:n_excluded])
    span = min(m, k)
    taken = 0
    while True:
        order = _top(score, m, span)
        taken = 0
        for t in range(order.shape[0]):
            if taken >= k:
                break
            j = order[t]
            row = cand[keep[j]]
            if n_excluded > 0 and _in_set(excluded, ex_shift, row):
                continue
            cat = np.int64(category[row])
            c = cat if cat >= 0 and cat < n_categories else -1  # the diversity bucket
            same_category = 0
            dup = False
            for u in range(taken):
                if taken_row[u] == row:
                    dup = True
                    break
                if taken_category[u] == c:
                    same_category += 1
            if dup or (max_per_category > 0 and same_category >= max_per_category):
                continue
            b = np.float64(boost[cat]) if cat >= 0 and cat < boost.shape[0] else 0.0
            r = REASON_STRATEGY
            if b >= REASON_CATEGORY_MIN:
                r = REASON_CATEGORY
            elif budget > 0.0 and paid[j] <= budget:
                r = REASON_BUDGET
            out[0, taken] = keep[j]
            out[1, taken] = r
            out_score[taken] = score[j]
            taken_category[taken] = c
            taken_row[taken] = row
            taken += 1
        if taken >= k or span >= m:
            break
        span = min(m, span * 4)
    return taken


class Ranked(NamedTuple):
    positions: np.ndarray  # int64 positions into the candidate array, best first
    scores: np.ndarray     # float64
    reasons: np.ndarray    # int64 REASON_* codes


_NO_SETS = np.zeros(0, np.int64)
_NO_BOOST = np.zeros(0, np.float32)
_I64, _I32, _F32, _F64 = np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float64)


def _vector(values: object, dtype: np.dtype) -> np.ndarray:
    """`values` as a 1-D array of `dtype`, without a copy when it already is one. Contiguity is not
    checked here: the kernel's dispatcher rejects a strided array (see `_normalized`)."""
    if type(values) is np.ndarray and values.dtype is dtype and values.ndim == 1:
        return values
    return np.ascontiguousarray(values, dtype=dtype).ravel()


def _column(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1 or not value.flags.c_contiguous:
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
    indexed by row, passed as they are (C-contiguous, never copied; a wrong one is a TypeError).
    Candidates, scores and the id lists are converted if needed and may be in any order.
    Nothing here is O(catalog): without `n_categories`, every category id >= 0 counts as its own.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    # Hot path: arrays already of the right dtype pass through untouched; scalars go as given
    # (the dispatcher converts e.g. an int price, and rejects what it cannot convert).
    cand = candidates if type(candidates) is np.ndarray and candidates.dtype is _I64 else _vector(candidates, _I64)
    base = scores if type(scores) is np.ndarray and scores.dtype is _F32 else _vector(scores, _F32)
    sets = _NO_SETS if excluded is None else (
        excluded if type(excluded) is np.ndarray and excluded.dtype is _I64 else _vector(excluded, _I64))
    n_excluded, n_include = sets.shape[0], 0
    if include_categories is not None or exclude_categories is not None:
        inc = _NO_SETS if include_categories is None else _vector(include_categories, _I64)
        exc = _NO_SETS if exclude_categories is None else _vector(exclude_categories, _I64)
        sets, n_include = np.concatenate((sets.ravel(), inc, exc)), inc.shape[0]
    boost = _NO_BOOST if category_boost is None else (
        category_boost if type(category_boost) is np.ndarray and category_boost.dtype is _F32
        else _vector(category_boost, _F32))
    out = np.empty((2, k), np.int64)  # positions, reason codes
    out_score = np.empty(k, np.float64)
    limit = NO_CATEGORY_LIMIT if n_categories is None else n_categories
    try:
        taken = _rerank_kernel(cand, base, stock, price, category, sets, boost, out, out_score,
                               include_out_of_stock, min_price, max_price, budget, budget_tolerance,
                               max_per_category, limit, n_excluded, n_include)
    except TypeError:  # a wrong dtype, a strided array or a bad scalar: say which, or convert
        taken = _rerank_kernel(*_normalized([
            cand, base, stock, price, category, sets, boost, out, out_score, include_out_of_stock,
            min_price, max_price, budget, budget_tolerance, max_per_category, limit, n_excluded, n_include]))
    if taken == k:
        return Ranked(out[0], out_score, out[1])
    if taken < 0:
        raise ValueError("candidates and scores must have the same length" if taken == BAD_LENGTHS
                         else "stock, price and category columns must have the same length")
    return Ranked(out[0, :taken], out_score[:taken], out[1, :taken])


def _normalized(args: list[object]) -> list[object]:
    """The slow path: name a bad catalog column (never copied), make request arrays contiguous,
    scalars plain Python values."""
    args = list(args)
    for i, name, dtype in ((2, "stock", _I32), (3, "price", _F64), (4, "category", _I32)):
        args[i] = _column(name, args[i], dtype)  # type: ignore[arg-type]
    for i in (0, 1, 5, 6):
        args[i] = np.require(args[i], requirements=("C", "W"))  # the signature wants writeable arrays
    args[9] = bool(args[9])
    for i in (10, 11, 12, 13):
        args[i] = float(args[i])  # type: ignore[arg-type]
    for i in (14, 15, 16, 17):
        args[i] = int(args[i])  # type: ignore[call-overload]
    return args


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
