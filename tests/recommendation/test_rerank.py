"""The Numba re-ranking kernel against its NumPy reference, and each rule on its own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.rerank import REASON_BUDGET, REASON_CATEGORY, REASON_STRATEGY, rerank, rerank_reference

N_ITEMS = 500
N_CATEGORIES = 12


def columns(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "stock": rng.integers(-1, 4, N_ITEMS).astype(np.int32),
        "price": np.round(rng.uniform(0, 100, N_ITEMS), 1),
        "category": rng.integers(-1, N_CATEGORIES, N_ITEMS).astype(np.int32),
    }


def same(a, b) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    np.testing.assert_array_equal(a.reasons, b.reasons)


RULES = [
    {},
    {"include_out_of_stock": True},
    {"min_price": 20.0, "max_price": 60.0},
    {"max_price": 30.0},
    {"budget": 25.0},
    {"budget": 25.0, "budget_tolerance": 1.0, "max_price": 80.0},
    {"include_categories": np.array([1, 3, 5])},
    {"exclude_categories": np.array([0, 2])},
    {"max_per_category": 1},
    {"max_per_category": 3, "budget": 40.0, "include_out_of_stock": True},
    {"category_boost": np.linspace(0, 0.3, N_CATEGORIES)},
    {"category_boost": np.linspace(0, 0.3, N_CATEGORIES), "max_per_category": 2, "min_price": 10.0,
     "exclude_categories": np.array([4]), "budget": 30.0},
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rules", RULES, ids=lambda r: ",".join(r) or "none")
def test_kernel_agrees_with_reference(seed: int, rules: dict[str, object]) -> None:
    rng = np.random.default_rng(seed)
    cols = columns(seed)
    n = int(rng.integers(0, 400))
    candidates = rng.integers(-1, N_ITEMS, n)  # -1 and repeats included on purpose
    scores = rng.normal(size=n).astype(np.float32)
    excluded = rng.integers(0, N_ITEMS, int(rng.integers(0, 30)))
    k = int(rng.integers(1, 60))
    kw = dict(cols, k=k, excluded=excluded, n_categories=N_CATEGORIES, **rules)
    same(rerank(candidates, scores, **kw), rerank_reference(candidates, scores, **kw))  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 300),
    k=st.integers(0, 80),
    oos=st.booleans(),
    min_price=st.sampled_from([0.0, 5.0, 50.0]),
    max_price=st.sampled_from([0.0, 50.0, 99.0]),
    budget=st.sampled_from([0.0, 10.0, 60.0]),
    per_category=st.integers(0, 4),
    ties=st.booleans(),
)
def test_kernel_agrees_with_reference_hypothesis(seed: int, n: int, k: int, oos: bool, min_price: float,
                                                 max_price: float, budget: float, per_category: int,
                                                 ties: bool) -> None:
    rng = np.random.default_rng(seed)
    cols = columns(seed % 7)
    candidates = rng.integers(-1, N_ITEMS, n)
    scores = (rng.integers(0, 3, n) if ties else rng.normal(size=n)).astype(np.float32)
    kw = dict(cols, k=k, excluded=rng.integers(0, N_ITEMS, 10), include_out_of_stock=oos, min_price=min_price,
              max_price=max_price, budget=budget, max_per_category=per_category, n_categories=N_CATEGORIES,
              include_categories=rng.integers(0, N_CATEGORIES, 6) if seed % 3 == 0 else None,
              exclude_categories=rng.integers(0, N_CATEGORIES, 2),
              category_boost=rng.uniform(0, 0.2, N_CATEGORIES).astype(np.float32))
    same(rerank(candidates, scores, **kw), rerank_reference(candidates, scores, **kw))  # type: ignore[arg-type]


def small() -> dict[str, np.ndarray]:
    return {"stock": np.array([1, 0, 3, 2, 5, 1], np.int32),
            "price": np.array([10.0, 20.0, 30.0, 40.0, 50.0, 200.0]),
            "category": np.array([0, 0, 1, 1, 2, -1], np.int32)}


CANDS = np.arange(6)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.float32)


@pytest.mark.parametrize("fn", [rerank, rerank_reference])
def test_each_rule(fn) -> None:  # type: ignore[no-untyped-def]
    cols = small()
    pick = lambda **kw: CANDS[fn(CANDS, SCORES, k=6, n_categories=3, **cols, **kw).positions].tolist()  # noqa: E731
    assert pick() == [0, 2, 3, 4, 5]                                  # out of stock removed
    assert pick(include_out_of_stock=True) == [0, 1, 2, 3, 4, 5]
    assert pick(min_price=30, max_price=50) == [2, 3, 4]
    assert pick(include_categories=np.array([1])) == [2, 3]
    assert pick(exclude_categories=np.array([0, 2])) == [2, 3, 5]
    assert pick(excluded=np.array([0, 4])) == [2, 3, 5]
    assert pick(max_per_category=1) == [0, 2, 4, 5]
    assert pick(budget=20.0) == [0, 2, 3, 4, 5]                       # 200 is far above: demoted, not removed
    ranked = fn(CANDS, SCORES, k=6, n_categories=3, budget=20.0, **cols)
    by_row = dict(zip(CANDS[ranked.positions].tolist(), ranked.scores.tolist(), strict=True))
    assert by_row[5] == pytest.approx(0.4 * (30.0 / 200.0) ** 2)       # limit 20 x 1.5 = 30
    assert by_row[0] == pytest.approx(0.9)
    assert dict(zip(CANDS[ranked.positions].tolist(), ranked.reasons.tolist(), strict=True))[0] == REASON_BUDGET
    boosted = fn(CANDS, SCORES, k=2, n_categories=3, category_boost=np.array([0, 0, 1.0], np.float32), **cols)
    assert CANDS[boosted.positions].tolist() == [4, 0]
    assert boosted.reasons.tolist() == [REASON_CATEGORY, REASON_STRATEGY]


def test_negative_scores_are_demoted_too() -> None:
    cols = small()
    scores = np.array([-0.1, 0, 0, 0, 0, -0.1], np.float32)
    ranked = rerank(np.array([0, 5]), scores[[0, 5]], k=2, n_categories=3, budget=20.0, **cols)
    assert ranked.positions.tolist() == [0, 1] and ranked.scores[1] < -0.1


def test_wrapper_checks_columns() -> None:
    cols = small()
    with pytest.raises(TypeError, match="price"):
        rerank(CANDS, SCORES, k=2, stock=cols["stock"], price=cols["price"].astype(np.float32),
               category=cols["category"])
    with pytest.raises(ValueError, match="same length"):
        rerank(CANDS, SCORES[:3], k=2, **cols)


def test_wrapper_converts_request_arrays_and_scalars() -> None:
    """Strided, read-only, list and other-dtype inputs take the slow path and give the same answer."""
    cols = columns(3)
    rng = np.random.default_rng(3)
    candidates = rng.integers(-1, N_ITEMS, 400)
    scores = rng.normal(size=400).astype(np.float32)
    excluded = rng.integers(0, N_ITEMS, 25)
    kw = dict(cols, k=15, n_categories=N_CATEGORIES, max_per_category=2)
    expected = rerank_reference(candidates[::2], scores[::2], excluded=excluded, budget=30, **kw)  # type: ignore[arg-type]
    frozen = excluded.copy()
    frozen.flags.writeable = False
    variants = [
        (candidates[::2], scores[::2], frozen, 30),                                   # strided, read-only
        (candidates[::2].tolist(), scores[::2].astype(np.float64), list(excluded), np.float32(30)),
        (candidates[::2].astype(np.int32), scores[::2].copy(), excluded.astype(np.int16), 30.0),
    ]
    for cands, s, ex, budget in variants:
        same(rerank(cands, s, excluded=ex, budget=budget, **kw), expected)  # type: ignore[arg-type]


def test_excluded_best_candidates_widen_the_search() -> None:
    cols = {"stock": np.ones(100, np.int32), "price": np.full(100, 10.0), "category": np.zeros(100, np.int32)}
    candidates = np.arange(100)
    scores = np.linspace(1, 0, 100).astype(np.float32)
    ranked = rerank(candidates, scores, k=3, excluded=np.arange(50), **cols)  # the 50 best are excluded
    assert ranked.positions.tolist() == [50, 51, 52]
    ranked = rerank(candidates, scores, k=3, excluded=np.arange(50), max_per_category=1, **cols)
    assert ranked.positions.tolist() == [50]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [65, 150])
def test_large_k_uses_the_heap_and_still_agrees(k: int, ties: bool) -> None:
    """Spans above SMALL_SPAN (64) select with a heap instead of the insertion buffer."""
    rng = np.random.default_rng(k)
    cols = columns(k)
    candidates = rng.integers(-1, N_ITEMS, 1_000)
    scores = (rng.integers(0, 4, 1_000) if ties else rng.normal(size=1_000)).astype(np.float32)
    kw = dict(cols, k=k, excluded=rng.integers(0, N_ITEMS, 40), max_per_category=20, budget=40.0,
              n_categories=N_CATEGORIES)
    same(rerank(candidates, scores, **kw), rerank_reference(candidates, scores, **kw))  # type: ignore[arg-type]
