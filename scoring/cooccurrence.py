"""Bought-together counts: a sparse, symmetric item x item matrix updated in real time.

Rows are dicts {neighbour: weight}: an update touches two rows (O(1) each), a lookup
reads one row per anchor item and turns it into NumPy arrays, so a request costs
O(neighbours of its anchors), never O(catalog). Weights are plain sums (e.g. 1.0 for two
items in the same order, 0.5 for two items added to the same cart).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class CoOccurrence:
    def __init__(self) -> None:
        self.rows: dict[int, dict[int, float]] = {}
        self.version = 0

    def __len__(self) -> int:
        """Number of stored (ordered) pairs."""
        return sum(len(r) for r in self.rows.values())

    def add_pair(self, a: int, b: int, weight: float = 1.0) -> None:
        if a == b:
            return
        row = self.rows.setdefault(a, {})
        row[b] = row.get(b, 0.0) + weight
        row = self.rows.setdefault(b, {})
        row[a] = row.get(a, 0.0) + weight
        self.version += 1

    def add_group(self, new_item: int, others: Iterable[int], weight: float = 1.0) -> None:
        """`new_item` joined a basket that already holds `others`: count each pair once."""
        for other in set(others):
            self.add_pair(new_item, other, weight)

    def neighbours(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows.get(item)
        if not row:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return (np.fromiter(row.keys(), np.int64, len(row)), np.fromiter(row.values(), np.float64, len(row)))

    def top(self, items: Iterable[int], n: int, *, exclude_given: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The `n` items most often together with any of `items` (weights summed), best first.

        Ties are broken by item index; the given items themselves are left out unless
        `exclude_given` is false.
        """
        given = np.unique(np.fromiter(items, np.int64))
        parts = [self.neighbours(int(i)) for i in given]
        parts = [p for p in parts if p[0].size]
        if not parts or n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        ids = np.concatenate([p[0] for p in parts])
        weights = np.concatenate([p[1] for p in parts])
        if len(parts) > 1:
            ids, inverse = np.unique(ids, return_inverse=True)
            weights = np.bincount(inverse, weights=weights)
        if exclude_given:
            keep = ~np.isin(ids, given)
            ids, weights = ids[keep], weights[keep]
        order = np.lexsort((ids, -weights))[:n]
        return ids[order], weights[order]

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, weights) of every stored pair, for snapshots."""
        n = len(self)
        rows = np.empty(n, np.int64)
        cols = np.empty(n, np.int64)
        vals = np.empty(n, np.float64)
        at = 0
        for a, row in self.rows.items():
            m = len(row)
            rows[at:at + m] = a
            cols[at:at + m] = np.fromiter(row.keys(), np.int64, m)
            vals[at:at + m] = np.fromiter(row.values(), np.float64, m)
            at += m
        return rows, cols, vals

    @classmethod
    def from_arrays(cls, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> CoOccurrence:
        out = cls()
        for a, b, w in zip(rows.tolist(), cols.tolist(), weights.tolist(), strict=True):
            if a != b:
                out.rows.setdefault(a, {})[b] = out.rows.get(a, {}).get(b, 0.0) + w
        return out
