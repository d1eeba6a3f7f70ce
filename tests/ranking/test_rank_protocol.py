"""The Rank protocol's candidate lists: the true next item once among 100 distinct products, decoys
drawn by popularity, the same lists for the same seed."""

from __future__ import annotations

from collections import Counter

from vitrine.evaluation.datasets import Case, Dataset
from vitrine.evaluation.rank_protocol import candidate_lists, popularity_order


def _dataset() -> Dataset:
    train = [[f"p{i}", f"p{(i * 7) % 300}", f"p{i % 10}"] for i in range(300)]   # p0..p9 are popular
    test = [Case((f"p{i}",), f"p{(i * 3) % 300}") for i in range(50)]
    return Dataset("t", train, test)


def test_lists_hold_the_target_once_among_distinct_candidates() -> None:
    data = _dataset()
    lists = candidate_lists(data, 100, seed=1)
    assert lists == candidate_lists(data, 100, seed=1)
    for case, lst in zip(data.test, lists, strict=True):
        assert len(lst) == 100 and len(set(lst)) == 100 and lst.count(case.next) == 1
    decoys = Counter(p for case, lst in zip(data.test, lists, strict=True) for p in lst if p != case.next)
    popular = sum(decoys[f"p{i}"] for i in range(10)) / 10
    assert popular > sum(decoys.values()) / len(decoys)   # the popular products are drawn more often


def test_popularity_order_sorts_by_training_clicks() -> None:
    data = _dataset()
    ordered = popularity_order(data, [["p150", "p3", "p299"]])[0]
    assert ordered[0] == "p3"
