"""Rank through a real server: the caller's list re-ordered for the shopper, every constraint kept,
unknown and bad ids, and a second scoring stage plugged in."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from scoring.list_rank import ListWeights, gather, list_scores, list_scores_reference
from services.recommendation.config import MAX_RANK_IDS
from services.recommendation.rank import ListScores, RankInputs
from tests.recommendation.conftest import CATEGORIES, Harness, product_id
from tests.support import assert_status
from vitrine.v1 import common_pb2, recommend_pb2

R = recommend_pb2
SHOES, HATS = 0, 2


def ids(response: recommend_pb2.RecommendResponse) -> list[str]:
    return [item.product_id for item in response.items]


def page() -> list[str]:
    """A 'search result page': ten products of every category, interleaved."""
    return [product_id(c, i) for i in range(10, 20) for c in range(len(CATEGORIES))]


async def rank(h: Harness, product_ids: list[str], **kw: object) -> recommend_pb2.RecommendResponse:
    return await h.stub.Rank(R.RankRequest(product_ids=product_ids, **kw), timeout=10)  # type: ignore[arg-type]


async def test_a_shopper_without_signals_gets_the_callers_order(store: Harness) -> None:
    response = await rank(store, page())
    assert ids(response) == page()
    assert response.strategy_used == "RANK" and response.fallback and response.unknown_products == 0
    assert response.model_version
    assert all(item.reason == "matches this page" for item in response.items)
    assert response.items[0].title and response.items[0].category == "shoes" and response.items[0].stock == 5


async def test_recent_views_move_their_neighbourhood_up(store: Harness) -> None:
    user = R.UserSignals(recent_product_ids=[product_id(HATS, 14), product_id(HATS, 15)])
    response = await rank(store, page(), user=user)
    got = ids(response)
    assert sorted(got) == sorted(page())            # every product kept, none added
    assert sum(p.startswith("hats-") for p in got[:10]) >= 8
    assert not response.fallback
    assert response.items[0].reason == "based on your recent activity"
    assert [i.score for i in response.items] == sorted((i.score for i in response.items), reverse=True)


async def test_category_affinity_moves_the_category_up(store: Harness) -> None:
    user = R.UserSignals(category_affinity={"socks": 1.0})
    response = await rank(store, page(), user=user)
    got = ids(response)
    assert all(p.startswith("socks-") for p in got[:3])
    socks = [i for i, p in enumerate(got) if p.startswith("socks-")]
    before = [i for i, p in enumerate(page()) if p.startswith("socks-")]
    assert sum(socks) < 0.7 * sum(before)   # moved up, not to the top of everything
    assert response.items[0].reason == "because you like socks"
    assert not response.fallback


async def test_every_constraint_is_kept(store: Harness) -> None:
    await store.stock([R.StockUpdate(product_id=product_id(SHOES, 10), stock=0)])
    listed = page()
    purchased = product_id(HATS, 11)
    constraints = R.Constraints(max_price=25.0, min_price=12.0, exclude_product_ids=[product_id(1, 12)],
                                exclude_categories=["bags"], max_per_category=3, exclude_purchased=True)
    response = await rank(store, listed, constraints=constraints,
                          user=R.UserSignals(purchased_product_ids=[purchased]))
    got = ids(response)
    assert got and product_id(SHOES, 10) not in got and product_id(1, 12) not in got and purchased not in got
    assert all(12.0 <= item.price <= 25.0 for item in response.items)
    assert not any(p.startswith("bags-") for p in got)
    per_category: dict[str, int] = {}
    for item in response.items:
        per_category[item.category] = per_category.get(item.category, 0) + 1
    assert max(per_category.values()) == 3 and len(per_category) == 5
    with_oos = ids(await rank(store, listed, constraints=R.Constraints(include_out_of_stock=True)))
    assert product_id(SHOES, 10) in with_oos
    only_hats = ids(await rank(store, listed, constraints=R.Constraints(include_categories=["hats"])))
    assert only_hats == [p for p in listed if p.startswith("hats-")]


async def test_k_keeps_the_best(store: Harness) -> None:
    got = ids(await rank(store, page(), k=7))
    assert got == page()[:7]


async def test_budget_demotes_what_the_shopper_would_not_pay(store: Harness) -> None:
    listed = [product_id(SHOES, 39), product_id(SHOES, 0)]   # 49.0 then 10.0
    got = ids(await rank(store, listed, user=R.UserSignals(budget=10.0)))
    assert got == [product_id(SHOES, 0), product_id(SHOES, 39)]


async def test_unknown_ids_are_dropped_and_counted_and_repeats_count_once(store: Harness) -> None:
    before = REGISTRY.get_sample_value("vitrine_recommendation_rank_unknown_products_total") or 0.0
    listed = ["nope-1", product_id(SHOES, 12), "nope-2", product_id(SHOES, 11), product_id(SHOES, 12)]
    response = await rank(store, listed)
    assert ids(response) == [product_id(SHOES, 12), product_id(SHOES, 11)]
    assert response.unknown_products == 2
    assert REGISTRY.get_sample_value("vitrine_recommendation_rank_unknown_products_total") == before + 2
    nothing_known = await rank(store, ["nope-1", "nope-2"])
    assert not nothing_known.items and nothing_known.unknown_products == 2 and nothing_known.strategy_used == "RANK"
    empty = await rank(store, [])
    assert not empty.items and empty.unknown_products == 0


async def test_rank_serves_before_any_model(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter([
        common_pb2.Product(product_id=f"p{i}", category="c", price=1.0, stock=1) for i in range(3)]), timeout=10)
    response = await rank(empty, ["p2", "p0", "p1"], user=R.UserSignals(recent_product_ids=["p0"]))
    assert ids(response) == ["p2", "p0", "p1"] and response.fallback and not response.model_version


@pytest.mark.parametrize(("request_kw", "needle"), [
    ({"product_ids": ["ok", "has space"]}, "product_ids[1]"),
    ({"product_ids": [""]}, "product_ids[0]"),
    ({"product_ids": ["x"] * (MAX_RANK_IDS + 1)}, "at most"),
    ({"product_ids": ["x"], "k": -1}, "k must be"),
    ({"product_ids": ["x"], "constraints": R.Constraints(min_price=5, max_price=2)}, "min_price"),
    ({"product_ids": ["x"], "user": R.UserSignals(budget=float("nan"))}, "budget"),
    ({"product_ids": ["x"], "user": R.UserSignals(recent_product_ids=["a"], recent_view_counts=[1, 2])},
     "recent_view_counts"),
])
async def test_bad_requests_are_invalid_argument(store: Harness, request_kw: dict[str, object],
                                                 needle: str) -> None:
    err = await assert_status(store.stub.Rank(R.RankRequest(**request_kw), timeout=10),  # type: ignore[arg-type]
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert needle in (err.details() or "")


class ReversedScorer:
    """A second stage that likes the caller's list backwards (stands in for a learned ranker)."""

    name = "reversed"

    def score(self, inputs: RankInputs) -> ListScores:
        n = inputs.rows.size
        return ListScores(np.arange(n, dtype=np.float32), np.zeros(n, bool))


async def test_a_second_stage_plugs_in_and_the_constraints_still_hold(store: Harness) -> None:
    store.service.list_ranker.scorer = ReversedScorer()
    listed = page()
    got = ids(await rank(store, listed, constraints=R.Constraints(exclude_categories=["shoes"])))
    assert got == [p for p in reversed(listed) if not p.startswith("shoes-")]


# -- scoring.list_rank ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_list_scores_agree_with_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    session = np.where(rng.random(n) < 0.3, rng.random(n) * 5, 0.0)
    similarity = rng.uniform(-1, 1, n)
    popularity = np.where(rng.random(n) < 0.5, rng.random(n), 0.0)
    weights = ListWeights(*rng.uniform(0, 2, 4))
    np.testing.assert_allclose(list_scores(n, session, similarity, popularity, weights),
                               list_scores_reference(n, session, similarity, popularity, weights), rtol=1e-6)


def test_gather_takes_each_rows_best_score() -> None:
    out = gather(np.array([5, 1, 9, 3]), np.array([3, 5, 3, 7]), np.array([0.5, 2.0, 1.5, 9.0], np.float32))
    np.testing.assert_array_equal(out, [2.0, 0.0, 0.0, 1.5])
    assert gather(np.array([1]), np.zeros(0, np.int64), np.zeros(0, np.float32)).tolist() == [0.0]
