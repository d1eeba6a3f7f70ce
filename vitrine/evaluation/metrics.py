"""Next-item metrics over ranked lists: HR@k, MRR@k, NDCG@k and catalog coverage.

A ranked list is a row of item ids (or indices), best first, padded with a value that is
never a target (e.g. -1 or ""). Each test case has exactly one target, so HR@k equals
Recall@k and P@k * k.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

NOT_FOUND = np.iinfo(np.int64).max


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its row of `ranked` (n_cases, k); NOT_FOUND if absent."""
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or ranked.shape[0] != targets.shape[0]:
        raise ValueError("ranked must be (n_cases, k) with one target per case")
    hit = ranked == targets[:, None]
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), first, NOT_FOUND).astype(np.int64)


def ranks_from_lists(lists: Sequence[Sequence[Hashable]], targets: Sequence[Hashable]) -> np.ndarray:
    """Like `target_ranks` for ragged Python lists (e.g. product id strings from the service)."""
    if len(lists) != len(targets):
        raise ValueError("one ranked list per target")
    out = np.full(len(targets), NOT_FOUND, dtype=np.int64)
    for i, (row, t) in enumerate(zip(lists, targets, strict=True)):
        for j, item in enumerate(row):
            if item == t:
                out[i] = j
                break
    return out


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Share of cases whose target is in the top k."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else 0.0


def _mean_gain(ranks: np.ndarray, k: int, gain: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean over the cases of `gain(rank)` for targets inside the top k, 0 for the others."""
    ranks = np.asarray(ranks)
    if not ranks.size:
        return 0.0
    inside = ranks < k
    g = np.zeros(ranks.shape, dtype=np.float64)
    g[inside] = gain(ranks[inside])
    return float(g.mean())


def mrr(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 for targets outside the top k."""
    return _mean_gain(ranks, k, lambda r: 1.0 / (r + 1.0))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    return _mean_gain(ranks, k, lambda r: 1.0 / np.log2(r + 2.0))


def coverage(lists: Sequence[Sequence[Hashable]] | np.ndarray, k: int, n_catalog: int,
             *, pad: Hashable = -1) -> float:
    """Share of the catalog that appears in at least one top-k list."""
    if n_catalog <= 0:
        return 0.0
    seen: set[Hashable] = set()
    for row in lists:
        for item in list(row)[:k]:
            if item != pad:
                seen.add(item.item() if isinstance(item, np.generic) else item)
    return len(seen) / n_catalog


@dataclass(frozen=True)
class Scores:
    """Metrics of one strategy, as fractions in [0, 1]."""

    cases: int
    hr10: float
    hr20: float
    mrr10: float
    mrr20: float
    ndcg10: float
    ndcg20: float
    coverage20: float

    def as_row(self) -> dict[str, float]:
        return {"HR@10": self.hr10, "HR@20": self.hr20, "MRR@10": self.mrr10, "MRR@20": self.mrr20,
                "NDCG@10": self.ndcg10, "NDCG@20": self.ndcg20, "Cov@20": self.coverage20}


def score_lists(lists: Sequence[Sequence[Hashable]] | np.ndarray, targets: Sequence[Hashable] | np.ndarray,
                n_catalog: int, *, pad: Hashable = -1) -> Scores:
    """All metrics for ranked lists (ragged lists or a padded 2-D array) against targets."""
    if isinstance(lists, np.ndarray) and lists.ndim == 2:
        ranks = target_ranks(lists, np.asarray(targets))
    else:
        ranks = ranks_from_lists(list(lists), list(targets))
    return Scores(
        cases=len(ranks),
        hr10=hit_rate(ranks, 10), hr20=hit_rate(ranks, 20),
        mrr10=mrr(ranks, 10), mrr20=mrr(ranks, 20),
        ndcg10=ndcg(ranks, 10), ndcg20=ndcg(ranks, 20),
        coverage20=coverage(lists, 20, n_catalog, pad=pad),
    )
