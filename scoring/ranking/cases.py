"""Training cases for the learned second stage, from sessions only (NumPy).

Time-ordered split: the sessions are given oldest first; the newest `validation_fraction` are held
out. The first stage (session neighbours, popularity, trend, item vectors) is rebuilt on the older
sessions only, so the features of a held-out case are what the service would have computed before
that session happened. Every prefix -> next step of a held-out session is a case; its candidates are
the first stage's top `n_candidates`; label 1 on the true next item. Cases whose next item the first
stage did not retrieve teach a ranker nothing and are dropped (counted in `recall`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from scoring.ranking.features import Cases, ItemTables, features
from scoring.session_knn import DEFAULT_N_RECENT, Neighbours, session_topk
from scoring.shopper import shopper_vector

TREND_FRACTION = 0.1   # the newest share of the sessions whose clicks count as "recent" for trend


class ItemStats(NamedTuple):
    popularity: np.ndarray   # float32 clicks per item row
    trend: np.ndarray        # float32 (recent share + eps) / (overall share + eps)


def item_stats(sessions: Sequence[np.ndarray], n_items: int, trend_fraction: float = TREND_FRACTION) -> ItemStats:
    """Click counts and trend per item from sessions given oldest first."""
    flat = np.concatenate([np.asarray(s, np.int64) for s in sessions]) if sessions else np.zeros(0, np.int64)
    cut = len(sessions) - max(1, int(len(sessions) * trend_fraction)) if sessions else 0
    recent = (np.concatenate([np.asarray(s, np.int64) for s in sessions[cut:]]) if sessions[cut:]
              else np.zeros(0, np.int64))
    pop = np.bincount(flat, minlength=n_items)[:n_items].astype(np.float64)
    rec = np.bincount(recent, minlength=n_items)[:n_items].astype(np.float64)
    eps = 1.0 / max(n_items, 1)
    trend = (rec / max(rec.sum(), 1.0) + eps) / (pop / max(pop.sum(), 1.0) + eps)
    return ItemStats(pop.astype(np.float32), trend.astype(np.float32))


class TrainingCases(NamedTuple):
    x: np.ndarray         # float32 (pairs, N_FEATURES)
    y: np.ndarray         # int32 (pairs,) 1 = the true next item
    groups: np.ndarray    # int64 (cases,) pairs per case, in order
    total_cases: int      # held-out steps, before dropping those the first stage missed
    recall: float         # share of them whose next item was among the candidates


def split(sessions: Sequence[np.ndarray], validation_fraction: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n_val = int(len(sessions) * validation_fraction)
    return list(sessions[: len(sessions) - n_val]), list(sessions[len(sessions) - n_val:])


def prefix_cases(held: Sequence[np.ndarray], max_cases: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(prefixes newest first, next items) of every step of `held`; a seeded sample of at most max_cases
    kept in time order."""
    prefixes, targets = [], []
    for s in held:
        s = np.asarray(s, np.int64).ravel()
        for i in range(1, s.size):
            prefixes.append(s[:i][::-1][:DEFAULT_N_RECENT])
            targets.append(int(s[i]))
    if len(prefixes) > max_cases:
        keep = np.sort(np.random.default_rng(seed).choice(len(prefixes), size=max_cases, replace=False))
        prefixes = [prefixes[i] for i in keep]
        targets = [targets[i] for i in keep]
    return prefixes, np.asarray(targets, np.int64)


def build_cases(prefixes: Sequence[np.ndarray], targets: np.ndarray, table: Neighbours, stats: ItemStats,
                vectors: np.ndarray, *, n_candidates: int, repeat_weight: float,
                recency_decay: float, purchase_weight: float,
                category: np.ndarray | None = None) -> TrainingCases:
    """Features and labels of the cases whose next item is among the first stage's candidates."""
    n_items = table.n_items
    idx, scores = session_topk(table, prefixes, n_candidates, repeat_weight=repeat_weight)
    # relative to the case's best: what the service's FOR_YOU head and Rank can pass (their scores are
    # normalised), and comparable between the older-sessions table and the full one
    scores = scores / np.maximum(scores[:, :1], 1e-12)
    hit = idx == targets[:, None]
    keep = np.flatnonzero(hit.any(axis=1))
    valid = idx[keep] >= 0
    groups = valid.sum(axis=1).astype(np.int64)
    recent = [prefixes[i] for i in keep.tolist()]
    dim = vectors.shape[1] if vectors.ndim == 2 else 1
    shopper = np.zeros((keep.size, dim), np.float32)
    if vectors.ndim == 2 and vectors.shape[0]:
        for t, r in enumerate(recent):
            r = r[r < vectors.shape[0]]
            if r.size:
                shopper[t] = shopper_vector(vectors, r, np.zeros(0, np.int64), recency_decay=recency_decay,
                                            purchase_weight=purchase_weight)
    recent_ptr = np.zeros(keep.size + 1, np.int64)
    np.cumsum([r.size for r in recent], out=recent_ptr[1:])
    cand_ptr = np.zeros(keep.size + 1, np.int64)
    np.cumsum(groups, out=cand_ptr[1:])
    cases = Cases(cand_ptr, idx[keep][valid], scores[keep][valid], recent_ptr,
                  np.concatenate(recent) if recent else np.zeros(0, np.int64), shopper,
                  np.zeros(keep.size, np.float32))
    vector_row = np.arange(vectors.shape[0] if vectors.ndim == 2 else 0, dtype=np.int64)
    empty = np.zeros(0, np.float32)
    items = ItemTables(table.indptr, table.indices, table.weights, vectors, vector_row, stats.popularity,
                       stats.trend, empty, np.ones(n_items, np.int64),
                       category if category is not None else np.full(n_items, -1, np.int64))
    x = features(cases, items)
    y = hit[keep][valid].astype(np.int32)
    return TrainingCases(x, y, groups, len(prefixes), float(keep.size / max(len(prefixes), 1)))
