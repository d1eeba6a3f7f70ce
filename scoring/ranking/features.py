"""Features per (shopper, candidate) for the learned second stage (Numba kernel + slow reference).

One call computes the features of many cases at once (training) or of one (a request). A case is a
shopper's recent views (catalog rows, NEWEST first) and a list of candidates (catalog rows, in the
first stage's order, with its score). Per pair, the columns of `FEATURES`:

- the first-stage score, that score over the case's best, the candidate's position in the list;
- view count of the candidate among the recent views and the position of its newest view
  (NO_VIEW when never viewed), whether it is the newest view;
- session neighbours: weight of newest view -> candidate, the largest weight from any recent view,
  how many recent views have it as a neighbour;
- cosine of its vector with the shopper vector (0 when either is missing);
- log popularity and trend (share of the recent clicks over the share of all clicks);
- price over the shopper's budget (0 without a budget or a price); share of the recent views in its
  category; in stock; the number of recent views.

Arrays indexed by item row may be shorter than the catalog (items added after training): a row
past their end reads as "unknown" (0, -1).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

FEATURES = (
    "first_score", "first_score_rel", "first_position",
    "view_count", "view_position", "is_newest",
    "nb_newest", "nb_max", "nb_count",
    "vector_sim", "log_popularity", "trend",
    "price_budget", "category_share", "in_stock", "n_recent",
)
N_FEATURES = len(FEATURES)
NO_VIEW = 1000.0   # view_position of a candidate never viewed


class Cases(NamedTuple):
    """Many cases, CSR-like: case c's candidates are cand[cand_ptr[c]:cand_ptr[c+1]]."""

    cand_ptr: np.ndarray     # int64 (C+1,)
    cand: np.ndarray         # int64 (P,) catalog rows
    first_score: np.ndarray  # float32 (P,)
    recent_ptr: np.ndarray   # int64 (C+1,)
    recent: np.ndarray       # int64 (R,) catalog rows, newest first within a case
    shopper: np.ndarray      # float32 (C, dim) shopper vectors (zeros = none)
    budget: np.ndarray       # float32 (C,) (0 = none)


class ItemTables(NamedTuple):
    """Per-item inputs (catalog rows unless said otherwise)."""

    nb_indptr: np.ndarray    # session neighbour table (scoring.session_knn.Neighbours)
    nb_indices: np.ndarray
    nb_weights: np.ndarray
    vectors: np.ndarray      # float32 (V, dim) unit rows
    vector_row: np.ndarray   # int64 model row per catalog row (-1 = none)
    popularity: np.ndarray   # float32 click counts
    trend: np.ndarray        # float32
    price: np.ndarray        # float32
    stock: np.ndarray        # int64
    category: np.ndarray     # int64 (-1 = none)


def _at(a: np.ndarray, i: int, default: float) -> float:
    return float(a[i]) if 0 <= i < a.shape[0] else default


@numba.njit(cache=True, nogil=True)
def _features_kernel(cand_ptr, cand, first_score, recent_ptr, recent, shopper, budget,  # pragma: no cover
                     nb_indptr, nb_indices, nb_weights, vectors, vector_row, popularity, trend,
                     price, stock, category, slot, out):
    n_nb = nb_indptr.shape[0] - 1
    dim = vectors.shape[1]
    for c in range(cand_ptr.shape[0] - 1):
        lo, hi = cand_ptr[c], cand_ptr[c + 1]
        rlo, rhi = recent_ptr[c], recent_ptr[c + 1]
        n_recent = rhi - rlo
        top = 0.0
        for i in range(lo, hi):
            if first_score[i] > top:
                top = first_score[i]
        for i in range(lo, hi):
            j = cand[i]
            out[i, 0] = first_score[i]
            out[i, 1] = first_score[i] / top if top > 0 else 0.0
            out[i, 2] = i - lo
            out[i, 3] = 0.0
            out[i, 4] = NO_VIEW
            out[i, 5] = 0.0
            out[i, 6] = 0.0
            out[i, 7] = 0.0
            out[i, 8] = 0.0
            if n_recent > 0 and recent[rlo] == j:
                out[i, 5] = 1.0
            # vector similarity
            sim = 0.0
            vr = vector_row[j] if 0 <= j < vector_row.shape[0] else -1
            if vr >= 0:
                for d in range(dim):
                    sim += vectors[vr, d] * shopper[c, d]
            out[i, 9] = sim
            pop = popularity[j] if 0 <= j < popularity.shape[0] else 0.0
            out[i, 10] = np.log1p(pop)
            out[i, 11] = trend[j] if 0 <= j < trend.shape[0] else 0.0
            pr = price[j] if 0 <= j < price.shape[0] else 0.0
            out[i, 12] = pr / budget[c] if budget[c] > 0 and pr > 0 else 0.0
            out[i, 13] = 0.0
            out[i, 14] = 1.0 if (0 <= j < stock.shape[0] and stock[j] > 0) else 0.0
            out[i, 15] = n_recent
            if 0 <= j < slot.shape[0]:
                slot[j] = i
        # views and categories of the recent items
        for p in range(n_recent):
            r = recent[rlo + p]
            if 0 <= r < slot.shape[0] and slot[r] >= 0:
                i = slot[r]
                out[i, 3] += 1.0
                if out[i, 4] == NO_VIEW:
                    out[i, 4] = p
        if n_recent > 0:
            for i in range(lo, hi):
                j = cand[i]
                cj = category[j] if 0 <= j < category.shape[0] else -1
                if cj >= 0:
                    same = 0
                    for p in range(n_recent):
                        r = recent[rlo + p]
                        cr = category[r] if 0 <= r < category.shape[0] else -1
                        if cr == cj:
                            same += 1
                    out[i, 13] = same / n_recent
        # session neighbours of the recent items that are candidates
        for p in range(n_recent):
            r = recent[rlo + p]
            if r < 0 or r >= n_nb:
                continue
            for t in range(nb_indptr[r], nb_indptr[r + 1]):
                j = nb_indices[t]
                if j < slot.shape[0] and slot[j] >= 0:
                    i = slot[j]
                    w = nb_weights[t]
                    if p == 0:
                        out[i, 6] = w
                    if w > out[i, 7]:
                        out[i, 7] = w
                    out[i, 8] += 1.0
        for i in range(lo, hi):
            j = cand[i]
            if 0 <= j < slot.shape[0]:
                slot[j] = -1


def features(cases: Cases, items: ItemTables) -> np.ndarray:
    """float32 (P, N_FEATURES): the features of every (case, candidate) pair, in pair order.
    A candidate repeated within a case gets its features only at its last occurrence (callers pass
    distinct candidates)."""
    n_pairs = int(cases.cand.size)
    out = np.zeros((n_pairs, N_FEATURES), np.float32)
    if not n_pairs:
        return out
    n_slots = max(int(cases.cand.max(initial=-1)), int(cases.recent.max(initial=-1)), items.nb_indptr.size - 1) + 1
    slot = np.full(max(n_slots, 1), -1, np.int64)
    vectors = items.vectors if items.vectors.ndim == 2 and items.vectors.shape[0] else np.zeros((1, 1), np.float32)
    shopper = cases.shopper
    if shopper.ndim != 2 or shopper.shape[1] != vectors.shape[1]:
        shopper = np.zeros((cases.cand_ptr.size - 1, vectors.shape[1]), np.float32)
    # the per-item arrays keep their dtype (the catalog's own arrays: no copy per request)
    _features_kernel(
        np.ascontiguousarray(cases.cand_ptr, np.int64), np.ascontiguousarray(cases.cand, np.int64),
        np.ascontiguousarray(cases.first_score, np.float32), np.ascontiguousarray(cases.recent_ptr, np.int64),
        np.ascontiguousarray(cases.recent, np.int64), np.ascontiguousarray(shopper, np.float32),
        np.ascontiguousarray(cases.budget, np.float32),
        np.ascontiguousarray(items.nb_indptr, np.int64), np.ascontiguousarray(items.nb_indices, np.int32),
        np.ascontiguousarray(items.nb_weights, np.float32), np.ascontiguousarray(vectors, np.float32),
        np.ascontiguousarray(items.vector_row, np.int64),
        items.popularity, items.trend, items.price, items.stock, items.category, slot, out)
    return out


def features_reference(cases: Cases, items: ItemTables) -> np.ndarray:
    """The same as `features`, one pair at a time in plain Python (slow; for the agreement test)."""
    rows = []
    n_cases = cases.cand_ptr.size - 1
    n_nb = items.nb_indptr.size - 1
    for c in range(n_cases):
        cand = cases.cand[cases.cand_ptr[c]:cases.cand_ptr[c + 1]].tolist()
        scores = cases.first_score[cases.cand_ptr[c]:cases.cand_ptr[c + 1]].astype(np.float64)
        recent = cases.recent[cases.recent_ptr[c]:cases.recent_ptr[c + 1]].tolist()
        top = max([float(s) for s in scores] + [0.0])
        for pos, j in enumerate(cand):
            s = float(np.float32(scores[pos]))
            views = [p for p, r in enumerate(recent) if r == j]
            nb = []   # (position of the recent view, weight) of j as its neighbour
            for p, r in enumerate(recent):
                if 0 <= r < n_nb:
                    lo, hi = items.nb_indptr[r], items.nb_indptr[r + 1]
                    for t in range(lo, hi):
                        if items.nb_indices[t] == j:
                            nb.append((p, float(items.nb_weights[t])))
            vr = int(_at(items.vector_row, j, -1))
            sim = (float(np.dot(items.vectors[vr].astype(np.float64), cases.shopper[c].astype(np.float64)))
                   if vr >= 0 and cases.shopper.ndim == 2 and cases.shopper.shape[1] == items.vectors.shape[1]
                   else 0.0)
            price, budget = _at(items.price, j, 0.0), float(cases.budget[c])
            cj = int(_at(items.category, j, -1))
            share = (sum(1 for r in recent if int(_at(items.category, r, -1)) == cj) / len(recent)
                     if cj >= 0 and recent else 0.0)
            rows.append([
                s, s / top if top > 0 else 0.0, pos,
                len(views), views[0] if views else NO_VIEW, 1.0 if recent and recent[0] == j else 0.0,
                max([w for p, w in nb if p == 0] + [0.0]), max([w for _, w in nb] + [0.0]), len(nb),
                sim, np.log1p(_at(items.popularity, j, 0.0)), _at(items.trend, j, 0.0),
                price / budget if budget > 0 and price > 0 else 0.0, share,
                1.0 if _at(items.stock, j, 0) > 0 else 0.0, len(recent),
            ])
    return np.asarray(rows, np.float32).reshape(-1, N_FEATURES)
