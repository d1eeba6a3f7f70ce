"""A shopper vector from recent views and purchases, and category-affinity blending.

Pure NumPy; no grpc, no services.

- `recency_weights(n, decay)`: the weight of the p-th most recent item (p = 0 newest).
- `shopper_vector(item_vectors, recent, purchased)`: recency-weighted sum of item vectors,
  L2-normalized, to query an inner-product index (FOR_YOU).
- `category_boost(scores, candidate_categories, affinity)`: adds the shopper's affinity for
  each candidate's category to its score.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RECENCY_DECAY = 0.95  # weight of position p (0 = newest) is decay**p (1.0 measured +0.1 HR@20 on Tmall)
DEFAULT_PURCHASE_WEIGHT = 0.5  # each purchased item counts this much (no recency order)
DEFAULT_CATEGORY_WEIGHT = 0.1  # score += weight * affinity[category]


def recency_weights(n: int, decay: float = DEFAULT_RECENCY_DECAY) -> np.ndarray:
    """float64 (n,) weights for positions 0..n-1, newest first.

    0 < decay <= 1: exponential, decay**p (decay = 1 weighs all positions equally).
    decay <= 0: harmonic, 1 / (p + 1).
    """
    p = np.arange(n, dtype=np.float64)
    if decay <= 0:
        return 1.0 / (p + 1.0)
    if decay > 1:
        raise ValueError("recency decay must be <= 1")
    return np.power(decay, p)


def shopper_vector(item_vectors: np.ndarray, recent: np.ndarray, purchased: np.ndarray | None = None,
                   *, recency_decay: float = DEFAULT_RECENCY_DECAY,
                   purchase_weight: float = DEFAULT_PURCHASE_WEIGHT) -> np.ndarray:
    """The shopper's query vector for an inner-product index.

    Args:
        item_vectors: float (n_items, dim), e.g. from `train_item_vectors` (unit rows).
        recent: item indices of recently viewed items, NEWEST FIRST. Indices < 0 (unknown
            products) are skipped but keep their position, so they still age the others.
            Repeats are allowed and add up.
        purchased: item indices bought (any order); each adds `purchase_weight` times its
            vector. Indices < 0 are skipped.
        recency_decay: see `recency_weights` (exponential decay**p, or 1/(p+1) if <= 0).
        purchase_weight: weight of each purchased item relative to the newest view (1.0).

    Returns:
        float32 (dim,), L2-normalized; all zeros if nothing usable was given (the caller
        should then fall back, e.g. to trending).
    """
    vectors = np.asarray(item_vectors)
    if vectors.ndim != 2:
        raise ValueError("item_vectors must be 2-D (n_items, dim)")
    n_items, dim = vectors.shape
    acc = np.zeros(dim, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.int64).ravel()
    if recent.size:
        if recent.max() >= n_items:
            raise ValueError(f"recent item index out of range [0, {n_items})")
        w = recency_weights(recent.size, recency_decay)
        ok = recent >= 0
        if ok.any():
            acc += w[ok] @ vectors[recent[ok]].astype(np.float64)
    if purchased is not None and purchase_weight != 0:
        bought = np.asarray(purchased, dtype=np.int64).ravel()
        bought = bought[bought >= 0]
        if bought.size:
            if bought.max() >= n_items:
                raise ValueError(f"purchased item index out of range [0, {n_items})")
            acc += purchase_weight * vectors[bought].astype(np.float64).sum(axis=0)
    norm = np.linalg.norm(acc)
    if norm > 0:
        acc /= norm
    return acc.astype(np.float32)


def category_boost(scores: np.ndarray, candidate_categories: np.ndarray, affinity: np.ndarray, *,
                   weight: float = DEFAULT_CATEGORY_WEIGHT) -> np.ndarray:
    """Blend category affinity into candidate scores: scores + weight * affinity[category].

    Args:
        scores: float (n_candidates,) retrieval scores (e.g. inner products).
        candidate_categories: int (n_candidates,) category id of each candidate; < 0 = none
            (no boost).
        affinity: float (n_categories,) the shopper's affinity per category id, e.g. the
            profile's time-decayed `category_affinity` mapped to ids and scaled to [0, 1]
            (divide by its max). Ids >= len(affinity) get no boost.
        weight: how much a full affinity (1.0) is worth in score units.

    Returns:
        float32 (n_candidates,) new array; `scores` is not modified.
    """
    s = np.asarray(scores, dtype=np.float32)
    cats = np.asarray(candidate_categories, dtype=np.int64).ravel()
    aff = np.asarray(affinity, dtype=np.float32).ravel()
    if cats.shape != s.shape:
        raise ValueError("scores and candidate_categories must have the same length")
    out = s.copy()
    ok = (cats >= 0) & (cats < aff.size)
    out[ok] += np.float32(weight) * aff[cats[ok]]
    return out
