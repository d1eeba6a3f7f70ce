"""Micro-benchmarks of the recommendation scoring core (pytest-benchmark).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest benchmarks/recommendation -q --benchmark-only \
        --benchmark-group-by=group

The kernel and its NumPy reference run on the same inputs, grouped together, so the report shows
the ratio directly. The 100k / 1M end-to-end latency and recall figures come from
`python -m benchmarks.recommendation.latency` (see benchmarks/recommendation.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from scoring.cooccurrence import CoOccurrence
from scoring.index import IndexParams, build_index
from scoring.popularity import DecayingCounter
from scoring.rerank import rerank, rerank_reference

N_ITEMS = 100_000
N_CATEGORIES = 500


@pytest.fixture(scope="module")
def catalog() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"stock": np.where(rng.random(N_ITEMS) < 0.1, 0, 5).astype(np.int32),
            "price": np.round(rng.lognormal(3.5, 0.8, N_ITEMS), 2),
            "category": rng.integers(0, N_CATEGORIES, N_ITEMS).astype(np.int32)}


@pytest.mark.parametrize("n_candidates", [200, 2_000])
@pytest.mark.parametrize("impl", [rerank, rerank_reference], ids=["numba", "numpy_reference"])
def test_rerank(benchmark, catalog, impl, n_candidates: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"rerank {n_candidates} candidates, k=20"
    rng = np.random.default_rng(n_candidates)
    rows = rng.integers(0, N_ITEMS, n_candidates)
    scores = rng.normal(size=n_candidates).astype(np.float32)
    boost = np.full(N_CATEGORIES, 0.01, np.float32)
    excluded = np.sort(rng.integers(0, N_ITEMS, 20))
    result = benchmark(impl, rows, scores, k=20, excluded=excluded, budget=40.0, max_per_category=2,
                       category_boost=boost, n_categories=N_CATEGORIES, **catalog)
    assert len(result.positions) == 20


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_search_200(benchmark, kind: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "index search, 50k x 64, top 200"
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = IndexParams(flat_max_items=100_000 if kind == "flat" else 1_000, kind="hnsw" if kind == "hnsw" else "ivf",
                         tune=False)
    index = build_index(x, params)
    query = x[:1] + x[1:2]
    _, rows = benchmark(index.search, query, 200)
    assert rows.shape == (1, 200)


def test_trending_top(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "signals"
    rng = np.random.default_rng(2)
    counter = DecayingCounter(3_600_000)
    counter.add(rng.integers(0, 1_000_000, 200_000), rng.integers(0, 86_400_000, 200_000))
    rows, _ = benchmark(counter.top, 2_000)
    assert rows.size == 2_000


def test_bought_together_top(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "signals"
    rng = np.random.default_rng(3)
    co = CoOccurrence()
    for a, b in rng.integers(0, 5_000, (200_000, 2)).tolist():
        co.add_pair(a, b)
    cart = rng.integers(0, 5_000, 5).tolist()
    rows, _ = benchmark(co.top, cart, 200)
    assert rows.size > 0
