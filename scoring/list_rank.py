"""First-stage scores for ordering a caller's own list (search results, a category page) for one shopper.

The caller's order is the relevance prior: the item at position p of n scores (n - p) / n. On top of
it, per item: its session-neighbour score from the shopper's recent views (divided by the largest in
the list), the cosine of its vector with the shopper vector (negative counts as 0) and its decayed
popularity (divided by the largest in the list), each times its weight. Constraints, category
affinity, the budget demotion and top k are applied afterwards by `scoring.rerank`. Pure NumPy:
one vectorised pass, no kernel (lists hold at most a thousand items).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ListWeights(NamedTuple):
    order: float = 1.0        # the caller's order (relevance)
    session: float = 1.0      # session neighbours of the recent views
    vector: float = 0.5       # similarity to the shopper vector
    popularity: float = 0.25  # decayed popularity


def gather(rows: np.ndarray, source_rows: np.ndarray, source_scores: np.ndarray) -> np.ndarray:
    """source_scores at the positions of `rows` in `source_rows` (float64; 0 where a row is absent).
    `source_rows` need not be sorted; a repeated row keeps its largest score."""
    out = np.zeros(rows.size, np.float64)
    if not source_rows.size or not rows.size:
        return out
    order = np.lexsort((-source_scores, source_rows))   # by row, best score first within a row
    keys, first = np.unique(source_rows[order], return_index=True)
    best = source_scores[order][first].astype(np.float64)
    at = np.minimum(np.searchsorted(keys, rows), keys.size - 1)
    hit = keys[at] == rows
    out[hit] = best[at[hit]]
    return out


def _normalized(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else np.zeros_like(values)


def list_scores(n: int, session: np.ndarray, similarity: np.ndarray, popularity: np.ndarray,
                weights: ListWeights = ListWeights()) -> np.ndarray:
    """float32 scores of a list of n items in the caller's order; each signal array has n entries."""
    for name, a in (("session", session), ("similarity", similarity), ("popularity", popularity)):
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    prior = (n - np.arange(n, dtype=np.float64)) / max(n, 1)
    score = (weights.order * prior + weights.session * _normalized(np.maximum(session, 0.0))
             + weights.vector * np.maximum(similarity, 0.0) + weights.popularity * _normalized(popularity))
    return score.astype(np.float32)


def list_scores_reference(n: int, session: np.ndarray, similarity: np.ndarray, popularity: np.ndarray,
                          weights: ListWeights = ListWeights()) -> np.ndarray:
    """The same as `list_scores`, one item at a time."""
    top_session = max([max(float(s), 0.0) for s in session] + [0.0])
    top_popularity = max([float(p) for p in popularity] + [0.0])
    out = []
    for p in range(n):
        s = max(float(session[p]), 0.0) / top_session if top_session > 0 else 0.0
        q = float(popularity[p]) / top_popularity if top_popularity > 0 else 0.0
        out.append(weights.order * (n - p) / n + weights.session * s
                   + weights.vector * max(float(similarity[p]), 0.0) + weights.popularity * q)
    return np.asarray(out, np.float32)
