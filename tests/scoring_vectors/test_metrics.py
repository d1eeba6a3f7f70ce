"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.evaluation import metrics as m


def test_ranks_hr_mrr_ndcg_by_hand() -> None:
    ranked = np.array([[5, 3, 9], [1, 2, 3], [7, 8, 4]])
    targets = np.array([3, 9, 4])
    ranks = m.target_ranks(ranked, targets)
    assert ranks[0] == 1 and ranks[1] == m.NOT_FOUND and ranks[2] == 2
    assert m.hit_rate(ranks, 3) == pytest.approx(2 / 3)
    assert m.hit_rate(ranks, 2) == pytest.approx(1 / 3)
    assert m.mrr(ranks, 3) == pytest.approx((1 / 2 + 1 / 3) / 3)
    assert m.mrr(ranks, 2) == pytest.approx((1 / 2) / 3)
    assert m.ndcg(ranks, 3) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3)


def test_ragged_string_lists_and_coverage() -> None:
    lists = [["a", "b"], [], ["c", "a", "d"]]
    ranks = m.ranks_from_lists(lists, ["b", "x", "a"])
    assert ranks.tolist() == [1, m.NOT_FOUND, 1]
    assert m.coverage(lists, 2, 10) == pytest.approx(3 / 10)  # a, b, c (d is beyond k=2)
    s = m.score_lists(lists, ["b", "x", "a"], 10, pad="")
    assert s.cases == 3
    assert s.hr10 == s.hr20 == pytest.approx(2 / 3)
    assert s.mrr20 == pytest.approx(1 / 3)
    assert s.coverage20 == pytest.approx(4 / 10)


def test_padded_array_lists() -> None:
    s = m.score_lists(np.array([[1, -1], [2, 1]]), np.array([1, 1]), 4)
    assert s.hr20 == 1.0 and s.mrr20 == pytest.approx(0.75) and s.coverage20 == pytest.approx(0.5)


def test_empty() -> None:
    assert m.hit_rate(np.array([]), 20) == 0.0 and m.mrr(np.array([]), 20) == 0.0
    assert m.coverage([], 20, 0) == 0.0
