"""FAISS index wrapper (choice, recall, save/load), popularity decay and bought-together counts."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from scoring.cooccurrence import CoOccurrence
from scoring.index import FLAT, HNSW, IVF, IndexParams, VectorIndex, build_index, exact_search, ivf_lists, recall_at_k
from scoring.popularity import DecayingCounter

HOUR = 3_600_000


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Item-vector-like data: clusters in a low-rank subspace plus noise, unit rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 200), 12)) @ rng.standard_normal((12, dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def test_small_catalogs_get_an_exact_index() -> None:
    x = clustered(2_000, 16)
    index = build_index(x, IndexParams(flat_max_items=5_000))
    assert index.kind == FLAT and index.recall == 1.0
    scores, rows = index.search(x[:3], 5)
    assert rows[:, 0].tolist() == [0, 1, 2] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def fresh_queries(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(9)  # shopper-like, not the tuning sample
    return sum(w * x[rng.integers(0, len(x), 300)] for w in (1.0, 0.6, 0.36)).astype(np.float32)  # type: ignore[no-any-return]


def test_large_catalogs_get_ivf_with_tuned_nprobe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = clustered(12_000, 32, seed=1)
    index = build_index(x, IndexParams(flat_max_items=5_000, nprobe=1))
    ivf = faiss.extract_index_ivf(index.index)
    assert index.kind == IVF and ivf.nlist == 12_000 // 50  # 4 sqrt(n) = 438 would train on < 39 per list
    assert index.recall >= 0.97 and 1 < index.nprobe == ivf.nprobe < ivf.nlist and index.ef_search == 0
    q = fresh_queries(x)
    _, truth = exact_search(x, q, 10)
    _, found = index.search(q, 10)
    assert recall_at_k(found, truth) >= 0.95
    index.save(tmp_path)
    assert json.loads((tmp_path / "index.json").read_text())["nprobe"] == index.nprobe
    loaded = VectorIndex.load(tmp_path)
    assert (loaded.kind, loaded.nprobe, loaded.size) == (IVF, index.nprobe, len(x))
    assert faiss.extract_index_ivf(loaded.index).nprobe == index.nprobe
    np.testing.assert_array_equal(loaded.search(q, 10)[1], found)
    _, many = loaded.search(q[:1], 500)
    assert many.shape == (1, 500)


def test_ivf_lists_grow_with_the_square_root() -> None:
    assert [ivf_lists(n) for n in (100, 12_000, 100_000, 1_000_000)] == [2, 240, 1_265, 4_000]


def test_index_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        IndexParams(kind="lsh")


def test_hnsw_index_saved_before_ivf_still_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = clustered(6_000, 16, seed=3)
    index = build_index(x, IndexParams(flat_max_items=1_000, kind=HNSW, hnsw_m=8, ef_construction=40, tune=False,
                                       ef_search=48))
    faiss.write_index(index.index, str(tmp_path / "index.faiss"))
    old_meta = {"kind": "hnsw", "ef_search": 48, "recall_at_10": 0.97, "build_seconds": 1.0, "items": 6_000, "dim": 16}
    (tmp_path / "index.json").write_text(json.dumps(old_meta))  # the format written before IVF: no nprobe
    loaded = VectorIndex.load(tmp_path)
    assert (loaded.kind, loaded.ef_search, loaded.nprobe) == (HNSW, 48, 0)
    assert faiss.downcast_index(loaded.index).hnsw.efSearch == 48


def test_large_catalogs_can_ask_for_hnsw_with_measured_recall(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = clustered(12_000, 32, seed=1)
    index = build_index(x, IndexParams(flat_max_items=5_000, kind=HNSW, hnsw_m=16, ef_construction=40,
                                       ef_search=16))
    assert index.kind == HNSW and index.recall >= 0.97 and index.ef_search >= 16
    q = fresh_queries(x)
    _, truth = exact_search(x, q, 10)
    _, found = index.search(q, 10)
    assert recall_at_k(found, truth) >= 0.95
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    assert (loaded.kind, loaded.ef_search, loaded.size) == (HNSW, index.ef_search, len(x))
    np.testing.assert_array_equal(loaded.search(q, 10)[1], found)
    _, many = loaded.search(q[:1], 500)  # k above efSearch still returns k rows
    assert (many >= 0).sum() == 500


def test_recall_at_k() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[1, 2, 9, 9], [8, 7, 6, 5]])
    assert recall_at_k(found, truth) == 0.75


def test_popularity_halves_every_half_life_and_ranks() -> None:
    c = DecayingCounter(half_life_ms=HOUR)
    c.add(np.array([0]), np.array([0 + 10 * HOUR]), 4.0, np.array([1]))
    c.add(np.array([1, 1]), np.array([12 * HOUR, 12 * HOUR]), 1.0, np.array([0, 0]))
    values = c.values(12 * HOUR)
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(2.0)
    assert c.values(13 * HOUR)[1] == pytest.approx(1.0)
    assert c.category_values(12 * HOUR).tolist() == pytest.approx([2.0, 1.0])
    rows, _ = c.top(5)
    assert rows.tolist()[:2] == [1, 0]
    rows, _ = c.top(5, among=np.array([0]))
    assert rows.tolist() == [0]


def test_popularity_rescales_without_losing_meaning() -> None:
    c = DecayingCounter(half_life_ms=HOUR)
    c.add(np.array([3]), np.array([HOUR]), 1.0)
    far = HOUR + 200 * HOUR  # 2**200 would overflow the stored scale without rescaling
    c.add(np.array([2]), np.array([far]), 1.0)
    values = c.values(far)
    assert values[2] == pytest.approx(1.0) and values[3] == pytest.approx(2.0 ** -200, rel=1e-6)
    assert np.isfinite(c.items).all()


def test_cooccurrence_top_for_one_and_many() -> None:
    co = CoOccurrence()
    co.add_group(1, [2, 3])      # basket {2, 3} gets 1
    co.add_pair(1, 2, 2.0)
    co.add_pair(3, 4, 0.5)
    rows, weights = co.top([1], 5)
    assert rows.tolist() == [2, 3] and weights.tolist() == [3.0, 1.0]
    rows, weights = co.top([1, 3], 5)
    assert rows.tolist() == [2, 4] and weights.tolist() == [3.0, 0.5]  # 1 and 3 themselves left out
    assert co.top([99], 5)[0].size == 0
    a, b, w = co.to_arrays()
    again = CoOccurrence.from_arrays(a, b, w)
    assert again.top([1, 3], 5)[0].tolist() == [2, 4]
