"""train_item_vectors: shape, dtype, determinism, geometry on a small synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scoring.item_vectors import cooccurrence_matrix, ppmi, randomized_svd, train_item_vectors


def two_clusters(seed: int = 0, n_sessions: int = 300) -> list[np.ndarray]:
    """Sessions that stay inside items 0..9 or inside 10..19; items 20..24 never appear."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_sessions):
        base = 0 if s % 2 == 0 else 10
        out.append(base + rng.integers(0, 10, size=rng.integers(2, 7)))
    return out


def test_shape_dtype_contiguity_and_unit_rows() -> None:
    v = train_item_vectors(two_clusters(), 25, dim=8, seed=0)
    assert v.shape == (25, 8)
    assert v.dtype == np.float32
    assert v.flags.c_contiguous
    norms = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(norms[:20], 1.0, rtol=1e-5)
    assert not v[20:].any(), "items never seen get exactly zero vectors"


def test_deterministic_for_a_seed() -> None:
    a = train_item_vectors(two_clusters(), 25, dim=8, seed=3)
    b = train_item_vectors(two_clusters(), 25, dim=8, seed=3)
    np.testing.assert_array_equal(a, b)


def test_cooccurring_items_are_closer_than_unrelated_ones() -> None:
    v = train_item_vectors(two_clusters(), 25, dim=8, seed=0)
    sims = v @ v.T
    same = np.mean([sims[i, j] for i in range(10) for j in range(10) if i != j])
    cross = np.mean([sims[i, j] for i in range(10) for j in range(10, 20)])
    assert same > cross + 0.3
    for i in range(20):  # every item's nearest other item is in its own cluster
        order = np.argsort(-sims[i])
        nearest = next(j for j in order if j != i)
        assert (nearest < 10) == (i < 10)


def test_dim_larger_than_items_pads_with_zero_columns() -> None:
    v = train_item_vectors([np.array([0, 1, 2]), np.array([1, 2])], 3, dim=16)
    assert v.shape == (3, 16)
    assert np.isfinite(v).all()


def test_empty_and_single_click_sessions_give_zero_vectors() -> None:
    v = train_item_vectors([np.array([1]), np.array([], dtype=np.int64)], 4, dim=4)
    assert v.shape == (4, 4) and not v.any()


def test_out_of_range_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="indices"):
        train_item_vectors([np.array([0, 5])], 5, dim=2)


def test_progress_is_reported() -> None:
    stages: list[str] = []
    train_item_vectors(two_clusters(), 25, dim=4, progress=lambda stage, f: stages.append(stage))
    assert stages[0] == "cooccurrence" and stages[-1] == "done"


def test_cooccurrence_is_distance_weighted_and_symmetric() -> None:
    c = cooccurrence_matrix([np.array([0, 1, 2, 0])], 3, window=2).toarray()
    # pairs within distance 2: (0,1) d1, (1,2) d1, (2,0) d1, (0,2) d2, (1,0) d2
    expected = np.zeros((3, 3))
    for a, b, w in [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0), (0, 2, 0.5), (1, 0, 0.5)]:
        expected[a, b] += w
        expected[b, a] += w
    np.testing.assert_allclose(c, expected)


def test_ppmi_matches_a_dense_reference() -> None:
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 4, size=(6, 6)).astype(float)
    dense = dense + dense.T
    np.fill_diagonal(dense, 0)
    got = ppmi(sp.csr_matrix(dense), cds=0.75).toarray()
    total = dense.sum()
    r = dense.sum(axis=1)
    p = r**0.75
    p *= total / p.sum()
    with np.errstate(divide="ignore"):
        ref = np.log(dense * total / np.outer(r, p))
    ref = np.where(dense > 0, np.maximum(ref, 0), 0)
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_randomized_svd_agrees_with_exact_svd() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 30))
    u, s = randomized_svd(sp.csr_matrix(x), 5, seed=0)
    s_ref = np.linalg.svd(x, compute_uv=False)[:5]
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    assert np.allclose(np.abs(u.T @ u), np.eye(5), atol=1e-8)
