"""The features kernel agrees with its slow reference on random cases (incl. unknown rows)."""

from __future__ import annotations

import numpy as np

from scoring.ranking.features import FEATURES, N_FEATURES, Cases, ItemTables, features, features_reference
from scoring.session_knn import build_neighbours


def _random_inputs(seed: int, n_items: int = 60, n_cases: int = 25, dim: int = 8) -> tuple[Cases, ItemTables]:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(0, n_items - 10, size=rng.integers(2, 12)) for _ in range(200)]
    table = build_neighbours(sessions, n_items - 10)   # the last 10 rows: added after training
    vectors = rng.normal(size=(n_items - 20, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vector_row = np.full(n_items - 5, -1, np.int64)
    vector_row[: n_items - 20] = rng.permutation(n_items - 20)
    cand, cand_ptr, recent, recent_ptr, scores = [], [0], [], [0], []
    for _ in range(n_cases):
        k = int(rng.integers(0, 15))
        cand.extend(rng.choice(n_items, size=k, replace=False).tolist())
        scores.extend(np.sort(rng.random(k))[::-1].tolist())
        cand_ptr.append(len(cand))
        r = int(rng.integers(0, 10))
        recent.extend(rng.integers(0, n_items, size=r).tolist())
        recent_ptr.append(len(recent))
    shopper = rng.normal(size=(n_cases, dim)).astype(np.float32)
    budget = np.where(rng.random(n_cases) < 0.5, rng.uniform(10, 50, n_cases), 0).astype(np.float32)
    cases = Cases(np.asarray(cand_ptr, np.int64), np.asarray(cand, np.int64), np.asarray(scores, np.float32),
                  np.asarray(recent_ptr, np.int64), np.asarray(recent, np.int64), shopper, budget)
    items = ItemTables(table.indptr, table.indices, table.weights, vectors, vector_row,
                       rng.integers(0, 100, n_items - 3).astype(np.float32), rng.random(n_items - 3).astype(np.float32),
                       np.where(rng.random(n_items) < 0.2, 0, rng.uniform(5, 80, n_items)).astype(np.float32),
                       rng.integers(0, 3, n_items).astype(np.int64), rng.integers(-1, 4, n_items).astype(np.int64))
    return cases, items


def test_kernel_agrees_with_reference() -> None:
    for seed in range(5):
        cases, items = _random_inputs(seed)
        fast, slow = features(cases, items), features_reference(cases, items)
        assert fast.shape == slow.shape == (cases.cand.size, N_FEATURES)
        for f, name in enumerate(FEATURES):
            np.testing.assert_allclose(fast[:, f], slow[:, f], rtol=1e-5, atol=1e-5, err_msg=name)


def test_views_and_neighbours_by_hand() -> None:
    # item 2 -> 3 in the sessions; the shopper viewed 2 (newest), 5, 2
    table = build_neighbours([np.array([2, 3]), np.array([2, 3]), np.array([5, 3])], 6)
    cases = Cases(np.array([0, 3]), np.array([3, 2, 4]), np.array([2.0, 1.0, 0.5], np.float32),
                  np.array([0, 3]), np.array([2, 5, 2]), np.zeros((1, 2), np.float32), np.zeros(1, np.float32))
    items = ItemTables(table.indptr, table.indices, table.weights, np.zeros((0, 2), np.float32),
                       np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.float32), np.ones(6, np.int64), np.full(6, -1, np.int64))
    f = features(cases, items)
    col = {name: i for i, name in enumerate(FEATURES)}
    assert f[1, col["view_count"]] == 2 and f[1, col["view_position"]] == 0 and f[1, col["is_newest"]] == 1
    assert f[0, col["view_count"]] == 0 and f[0, col["nb_newest"]] > 0 and f[0, col["nb_count"]] == 3
    assert f[2, col["nb_max"]] == 0 and f[:, col["first_score_rel"]].tolist() == [1.0, 0.5, 0.25]
    assert f[:, col["n_recent"]].tolist() == [3, 3, 3]


def test_empty() -> None:
    _, items = _random_inputs(0)
    none = Cases(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(1, np.int64),
                 np.zeros(0, np.int64), np.zeros((0, 8), np.float32), np.zeros(0, np.float32))
    assert features(none, items).shape == (0, N_FEATURES)
