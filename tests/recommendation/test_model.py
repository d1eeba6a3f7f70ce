"""`assemble`: the model-row / catalog-row maps a request uses."""

from __future__ import annotations

import numpy as np

from scoring.index import IndexParams, build_index
from services.recommendation.model import assemble


def unit_rows(n: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rows_map_both_ways_and_same_rows_is_detected() -> None:
    x = unit_rows(4)
    index = build_index(x, IndexParams())
    row_of = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    same = assemble("v", np.array(["a", "b", "c", "d"]), x, index, row_of, 5, {})
    assert same.same_rows and same.rows_for(np.array([3, 4, -1])).tolist() == [3, -1, -1]
    shuffled = assemble("v", np.array(["c", "a", "zz", "b"]), x, index, row_of, 5, {})
    assert not shuffled.same_rows
    assert shuffled.catalog_rows.tolist() == [2, 0, -1, 1]
    assert shuffled.rows_for(np.array([0, 1, 2, 3])).tolist() == [1, 3, 0, -1]
    assert shuffled.rows_for(np.zeros(0, np.int64)).size == 0
