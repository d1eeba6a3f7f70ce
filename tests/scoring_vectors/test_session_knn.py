"""Session-kNN neighbours and scores: hand-computed counts, kernels vs the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import session_knn as sk


def random_sessions(seed: int, n_items: int = 60, n: int = 400) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, size=rng.integers(1, 10)) for _ in range(n)]


def test_directional_counts_by_hand() -> None:
    c = sk.directional_counts([np.array([0, 1, 2])], 3, window=2, backward=0.5, distance_power=1.0).toarray()
    expected = np.array([[0, 1, 0.5], [0.5, 0, 1], [0.25, 0.5, 0]])
    np.testing.assert_allclose(c, expected)


def test_neighbours_are_sorted_truncated_and_normalized() -> None:
    sessions = random_sessions(0)
    nb = sk.build_neighbours(sessions, 70, top_m=5, window=3, norm_alpha=0.5)
    assert nb.indptr.dtype == np.int64 and nb.indices.dtype == np.int32 and nb.weights.dtype == np.float32
    assert nb.n_items == 70
    assert np.diff(nb.indptr).max() <= 5
    assert (np.diff(nb.indptr)[60:] == 0).all(), "unseen items have no neighbours"
    for i in range(60):
        idx, w = nb.neighbours_of(i)
        assert (np.diff(w) <= 0).all()
        assert i not in idx
    # weight = c / sqrt(n_a n_b) with norm_alpha 0.5: check one entry against the counts
    c = sk.directional_counts(sessions, 70, window=3)
    freq = np.bincount(np.concatenate(sessions), minlength=70)
    idx, w = nb.neighbours_of(0)
    np.testing.assert_allclose(w[0], c[0, idx[0]] / np.sqrt(freq[0] * freq[idx[0]]), rtol=1e-5)


def test_round_trip_through_arrays(tmp_path) -> None:
    nb = sk.build_neighbours(random_sessions(1), 60)
    np.savez(tmp_path / "n.npz", **nb.as_arrays())
    back = sk.Neighbours.from_arrays(np.load(tmp_path / "n.npz"))
    for a, b in zip(nb.as_arrays().values(), back.as_arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("decay", "repeat", "repeat_decay"), [(0.0, 0.0, 0.0), (0.9, 5.0, 1.0), (0.5, 1.0, 0.7)])
def test_kernels_agree_with_reference(seed: int, decay: float, repeat: float, repeat_decay: float) -> None:
    rng = np.random.default_rng(seed)
    nb = sk.build_neighbours(random_sessions(seed), 65, top_m=8)
    recent = rng.integers(-2, 70, size=rng.integers(0, 25))  # includes unknown (-2, -1, >= 65)
    kw = {"recency_decay": decay, "repeat_weight": repeat, "repeat_decay": repeat_decay, "n_recent": 20}
    cand, scores = sk.session_scores(nb, recent, **kw)
    ref = sk.session_scores_reference(nb, recent, **kw)
    assert set(cand.tolist()) == set(np.flatnonzero(ref > 0).tolist())
    np.testing.assert_allclose(scores, ref[cand], rtol=1e-5)
    assert (np.diff(scores) <= 0).all()
    idx, sc = sk.session_topk(nb, [recent], 10, **kw)
    k = min(10, cand.size)
    np.testing.assert_allclose(sc[0, :k], scores[:k], rtol=1e-5)
    np.testing.assert_allclose(sc[0, :k], ref[idx[0, :k]], rtol=1e-5)
    assert (idx[0, k:] == -1).all()


def test_re_views_rank_first_with_a_large_repeat_weight() -> None:
    nb = sk.build_neighbours([np.array([0, 1, 2, 3])] * 5, 6)
    cand, _ = sk.session_scores(nb, np.array([4, 2, 2]), repeat_weight=100.0, repeat_decay=1.0)
    assert cand[0] == 2 and cand[1] == 4
    cand, _ = sk.session_scores(nb, np.array([2]), repeat_weight=0.0)
    assert 2 not in cand and set(cand.tolist()) == {0, 1, 3}


def test_nothing_known_gives_empty() -> None:
    nb = sk.build_neighbours([np.array([0, 1])], 3)
    cand, scores = sk.session_scores(nb, np.array([-1, 7]))
    assert cand.size == 0 and scores.size == 0


def test_save_and_load(tmp_path) -> None:
    nb = sk.build_neighbours(random_sessions(2), 60)
    assert sk.load_neighbours(tmp_path) is None
    sk.save_neighbours(tmp_path, nb)
    back = sk.load_neighbours(tmp_path)
    assert back is not None and back.n_items == 60
    np.testing.assert_array_equal(back.weights, nb.weights)
    cand, _ = sk.session_scores(back, np.array([3, 4]))
    np.testing.assert_array_equal(cand, sk.session_scores(nb, np.array([3, 4]))[0])


def test_reindex_renames_items_and_drops_unmapped() -> None:
    nb = sk.build_neighbours(random_sessions(3, n_items=30), 30, top_m=6)
    perm = np.random.default_rng(0).permutation(40)[:30]  # item i -> perm[i] in a space of 40
    perm[5] = -1                                           # item 5 is gone
    back = sk.reindex(nb, perm, 40)
    assert back.n_items == 40
    for i in range(30):
        idx, w = nb.neighbours_of(i)
        got_idx, got_w = back.neighbours_of(int(perm[i])) if perm[i] >= 0 else (None, None)
        if perm[i] < 0:
            continue
        keep = perm[idx] >= 0
        np.testing.assert_array_equal(got_idx, perm[idx][keep])
        np.testing.assert_array_equal(got_w, w[keep])
    recent = np.array([3, 7, 7, 12])
    cand, scores = sk.session_scores(nb, recent, n_recent=4)
    cand2, scores2 = sk.session_scores(back, perm[recent], n_recent=4)
    keep = perm[cand] >= 0
    assert set(cand2.tolist()) == set(perm[cand][keep].tolist())
    np.testing.assert_allclose(np.sort(scores2), np.sort(scores[keep]), rtol=1e-6)


def _sessions_with_reviews(seed: int, review: bool) -> list[np.ndarray]:
    """Sessions over 40 items in 4 clusters; with `review`, every other click goes back to the first one."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(600):
        base = 10 * rng.integers(0, 4)
        s = base + rng.permutation(10)[:6]
        if review:
            s[2::2] = s[0]
        out.append(s)
    return out


def test_tune_repeat_weight_follows_the_store() -> None:
    heavy, res = sk.tune_repeat_weight(_sessions_with_reviews(0, True), 40, grid=(0.1, 5.0))
    assert heavy == 5.0 and res[5.0] > res[0.1]
    light, res = sk.tune_repeat_weight(_sessions_with_reviews(0, False), 40, grid=(0.1, 5.0))
    assert light == 0.1 and res[0.1] > res[5.0]
    assert sk.tune_repeat_weight([np.array([0, 1])] * 5, 2) == (sk.DEFAULT_REPEAT_WEIGHT, {})


def test_training_kernels_release_the_gil() -> None:
    """Train runs these in a worker thread; holding the GIL would stop the service's event loop
    (and every Recommend on it) for as long as they run (benchmarks/recommendation.md)."""
    for kernel in (sk._top_m_kernel, sk._topk_batch):
        assert kernel.targetoptions.get("nogil") is True, kernel.__name__
