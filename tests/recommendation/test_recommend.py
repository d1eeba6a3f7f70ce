"""Recommend through a real server: every strategy, every constraint, bad input."""

from __future__ import annotations

import grpc
import pytest

from tests.recommendation.conftest import CATEGORIES, PER_CATEGORY, Harness, product_id, sessions, train_request
from tests.support import assert_status
from vitrine.v1 import common_pb2, recommend_pb2

R = recommend_pb2
SHOES = 0


def ids(response: recommend_pb2.RecommendResponse) -> list[str]:
    return [item.product_id for item in response.items]


async def observe(h: Harness, events: list[common_pb2.Event]) -> recommend_pb2.ObserveSummary:
    return await h.stub.Observe(iter(events), timeout=10)


def event(kind: int, pid: str, *, user: str = "u1", session: str = "s1", order: str = "",
          eid: str = "") -> common_pb2.Event:
    return common_pb2.Event(event_id=eid, user_id=user, session_id=session, type=kind, product_id=pid,
                            order_id=order, price=10.0)


# -- strategies -----------------------------------------------------------------------------------
async def test_similar_returns_neighbours_in_the_anchors_category(store: Harness) -> None:
    anchor = product_id(SHOES, 10)
    response = await store.recommend(R.SIMILAR, k=10, product_id=anchor)
    got = ids(response)
    assert len(got) == 10 and anchor not in got
    assert sum(p.startswith("shoes-") for p in got) >= 8
    assert response.strategy_used == "SIMILAR" and not response.fallback
    assert response.model_version
    assert all(item.reason == "similar to Shoes 10" for item in response.items)
    assert [i.score for i in response.items] == sorted((i.score for i in response.items), reverse=True)


async def test_for_you_follows_recent_views(store: Harness) -> None:
    user = R.UserSignals(recent_product_ids=[product_id(2, 5), product_id(2, 6), product_id(2, 7)])
    response = await store.recommend(R.FOR_YOU, k=20, user=user)
    got = ids(response)
    assert len(got) == 20 and response.strategy_used == "FOR_YOU" and not response.fallback
    assert sum(p.startswith("hats-") for p in got[:10]) >= 8 and sum(p.startswith("hats-") for p in got) >= 10
    # Viewed items stay eligible (shoppers go back to them); a page that wants them out says so.
    without_recent = await store.recommend(R.FOR_YOU, k=20, user=user,
                                           constraints=R.Constraints(exclude_product_ids=user.recent_product_ids))
    assert len(ids(without_recent)) == 20 and not set(ids(without_recent)) & set(user.recent_product_ids)
    store.service.recommender.for_you.session_neighbours = False  # vectors only
    vectors_only = ids(await store.recommend(R.FOR_YOU, k=20, user=user))
    assert sum(p.startswith("hats-") for p in vectors_only) >= 15


async def test_session_neighbours_rank_first_for_similar(store: Harness) -> None:
    a, b = product_id(2, 0), product_id(5, 39)  # different categories, always seen together
    await store.stub.Train(train_request(sessions() + [[a, b]] * 50, dimensions=16), timeout=60)
    response = await store.recommend(R.SIMILAR, k=5, product_id=a)
    assert ids(response)[0] == b and response.items[0].reason == "similar to Hats 0"


async def test_for_you_category_affinity_moves_the_category_up(store: Harness) -> None:
    user = R.UserSignals(recent_product_ids=[product_id(2, 5)], category_affinity={"bags": 1.0})
    plain = await store.recommend(R.FOR_YOU, k=20, user=R.UserSignals(recent_product_ids=[product_id(2, 5)]))
    boosted = await store.recommend(R.FOR_YOU, k=20, user=user)
    count = lambda r: sum(p.startswith("bags-") for p in ids(r))  # noqa: E731
    assert count(boosted) >= count(plain)
    assert any(item.reason == "because you like bags" for item in boosted.items) or count(boosted) == 0


async def test_for_you_without_signals_falls_back_to_trending(store: Harness) -> None:
    response = await store.recommend(R.FOR_YOU, k=5, user=R.UserSignals(user_id="new"))
    assert len(response.items) == 5
    assert response.fallback and response.strategy_used == "TRENDING"


async def test_trending_follows_observed_events_overall_and_per_category(store: Harness) -> None:
    hot = [product_id(3, 1), product_id(4, 2)]
    summary = await observe(store, [event(common_pb2.PRODUCT_VIEW, hot[0], eid=f"a{i}") for i in range(6)]
                            + [event(common_pb2.PURCHASE, hot[1], order="o1", eid="b")]
                            + [event(common_pb2.PAGE_VIEW, "", eid="c")])
    assert (summary.observed, summary.ignored, summary.rejected) == (7, 1, 0)
    response = await store.recommend(R.TRENDING, k=5)
    assert ids(response)[:2] == [hot[0], hot[1]]  # 6 views (weight 1) beat 1 purchase (weight 5)
    assert response.strategy_used == "TRENDING" and not response.fallback
    per_category = await store.recommend(R.TRENDING, k=5, constraints=R.Constraints(include_categories=["socks"]))
    assert ids(per_category)[0] == hot[1]
    assert all(p.startswith("socks-") for p in ids(per_category))
    assert per_category.items[0].reason == "popular in socks"


async def test_observe_ignores_repeated_event_ids(store: Harness) -> None:
    first = await observe(store, [event(common_pb2.PRODUCT_VIEW, product_id(1, 1), eid="same")])
    again = await observe(store, [event(common_pb2.PRODUCT_VIEW, product_id(1, 1), eid="same")])
    assert (first.observed, again.observed, again.ignored) == (1, 0, 1)


async def test_bought_together_uses_orders_then_vectors(store: Harness) -> None:
    anchor, partner = product_id(0, 1), product_id(5, 30)
    events = []
    for order in range(3):
        events += [event(common_pb2.PURCHASE, anchor, order=f"o{order}", eid=f"p{order}a"),
                   event(common_pb2.PURCHASE, partner, order=f"o{order}", eid=f"p{order}b")]
    await observe(store, events)
    response = await store.recommend(R.BOUGHT_TOGETHER, k=5, product_id=anchor)
    got = ids(response)
    assert got[0] == partner and len(got) == 5 and anchor not in got
    assert response.items[0].reason == "often bought with Shoes 1"
    assert response.strategy_used == "BOUGHT_TOGETHER" and not response.fallback
    # without any co-purchase the vectors answer
    lonely = await store.recommend(R.BOUGHT_TOGETHER, k=5, product_id=product_id(2, 20))
    assert len(lonely.items) == 5 and lonely.fallback and lonely.strategy_used == "SIMILAR"


async def test_bought_together_counts_adds_in_the_same_session(store: Harness) -> None:
    a, b = product_id(1, 3), product_id(4, 33)
    await observe(store, [event(common_pb2.ADD_TO_CART, a, session="cart1", eid="x1"),
                          event(common_pb2.ADD_TO_CART, b, session="cart1", eid="x2")])
    response = await store.recommend(R.BOUGHT_TOGETHER, k=3, product_id=b)
    assert ids(response)[0] == a


async def test_cart_complements_excludes_the_cart(store: Harness) -> None:
    cart = [product_id(0, 1), product_id(1, 1)]
    extra = product_id(5, 5)
    await observe(store, [event(common_pb2.PURCHASE, cart[0], order="o9", eid="c1"),
                          event(common_pb2.PURCHASE, extra, order="o9", eid="c2"),
                          event(common_pb2.PURCHASE, cart[1], order="o9", eid="c3")])
    response = await store.recommend(R.CART_COMPLEMENTS, k=8, cart_product_ids=cart)
    got = ids(response)
    assert got[0] == extra and not set(got) & set(cart) and len(got) == 8
    assert response.items[0].reason == "goes with your cart"


async def test_up_sell_is_pricier_same_category_within_budget(store: Harness) -> None:
    anchor = product_id(SHOES, 10)  # price 20
    response = await store.recommend(R.UP_SELL, k=10, product_id=anchor, user=R.UserSignals(budget=20.0))
    assert response.items
    for item in response.items:
        assert item.category == "shoes" and 20.0 < item.price <= 30.0  # budget 20 x tolerance 1.5
    assert response.strategy_used == "UP_SELL" and not response.fallback


async def test_recently_viewed_keeps_order_and_applies_constraints(store: Harness) -> None:
    recent = [product_id(1, 1), product_id(2, 2), product_id(1, 1), product_id(3, 3), "gone-product"]
    await store.stock([R.StockUpdate(product_id=product_id(2, 2), stock=0)])
    response = await store.recommend(R.RECENTLY_VIEWED, k=5, user=R.UserSignals(recent_product_ids=recent))
    assert ids(response)[:2] == [product_id(1, 1), product_id(3, 3)]
    assert all(item.reason == "you viewed this recently" for item in response.items[:2])
    assert product_id(2, 2) not in ids(response)


async def test_without_a_model_similar_falls_back(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter([common_pb2.Product(product_id=f"p{i}", price=1.0, stock=1)
                                          for i in range(5)]), timeout=10)
    response = await empty.recommend(R.SIMILAR, k=3, product_id="p0")
    assert len(response.items) == 3 and response.fallback and response.model_version == ""
    assert "p0" not in ids(response)


# -- constraints ----------------------------------------------------------------------------------
async def test_out_of_stock_never_appears_even_right_after_update_inventory(store: Harness) -> None:
    anchor = product_id(SHOES, 10)
    before = ids(await store.recommend(R.SIMILAR, k=10, product_id=anchor))
    gone = before[:3]
    summary = await store.stock([R.StockUpdate(product_id=p, stock=0) for p in gone])
    assert summary.upserted == 3
    for strategy in (R.SIMILAR, R.UP_SELL, R.BOUGHT_TOGETHER, R.TRENDING):
        after = ids(await store.recommend(strategy, k=50, product_id=anchor))
        assert not set(after) & set(gone), strategy
    anyway = await store.recommend(R.SIMILAR, k=10, product_id=anchor,
                                   constraints=R.Constraints(include_out_of_stock=True))
    assert set(gone) & set(ids(anyway))
    everything_gone = [R.StockUpdate(product_id=product_id(c, i), stock=0)
                       for c in range(len(CATEGORIES)) for i in range(PER_CATEGORY)]
    await store.stock(everything_gone)
    empty = await store.recommend(R.SIMILAR, k=10, product_id=anchor)
    assert not empty.items and empty.fallback


async def test_update_inventory_price_is_seen_by_the_next_request(store: Harness) -> None:
    anchor = product_id(SHOES, 10)
    target = ids(await store.recommend(R.SIMILAR, k=1, product_id=anchor))[0]
    await store.stock([R.StockUpdate(product_id=target, stock=3, price=999.0)])
    capped = await store.recommend(R.SIMILAR, k=10, product_id=anchor, constraints=R.Constraints(max_price=100))
    assert target not in ids(capped)
    product = await store.stub.GetProduct(R.GetProductRequest(product_id=target), timeout=5)
    assert (product.price, product.stock) == (999.0, 3)


async def test_price_window_and_max_price(store: Harness) -> None:
    c = R.Constraints(min_price=20, max_price=30)
    for strategy in (R.SIMILAR, R.TRENDING, R.FOR_YOU):
        response = await store.recommend(strategy, k=30, product_id=product_id(0, 5), constraints=c,
                                         user=R.UserSignals(recent_product_ids=[product_id(0, 5)]))
        assert response.items
        assert all(20 <= i.price <= 30 for i in response.items), strategy


async def test_budget_demotes_pricier_items(store: Harness) -> None:
    anchor = product_id(SHOES, 25)
    plain = await store.recommend(R.SIMILAR, k=10, product_id=anchor)
    budget = await store.recommend(R.SIMILAR, k=10, product_id=anchor, user=R.UserSignals(budget=15.0))
    mean = lambda r: sum(i.price for i in r.items) / len(r.items)  # noqa: E731
    assert mean(budget) < mean(plain)
    plain_score = {i.product_id: i.score for i in plain.items}
    for item in budget.items:  # above 15 x 1.5 = 22.5: demoted by (22.5 / price) ** 2
        if item.product_id in plain_score and item.price > 22.5:
            assert item.score == pytest.approx(plain_score[item.product_id] * (22.5 / item.price) ** 2, rel=1e-5)
    capped = await store.recommend(R.SIMILAR, k=10, product_id=anchor, user=R.UserSignals(budget=15.0),
                                   constraints=R.Constraints(max_price=22.5))
    assert capped.items and all(i.price <= 22.5 for i in capped.items)
    assert any(i.reason == "within your budget" for i in (await store.recommend(
        R.UP_SELL, k=5, product_id=product_id(SHOES, 1), user=R.UserSignals(budget=15.0))).items)


async def test_include_and_exclude_categories(store: Harness) -> None:
    inc = await store.recommend(R.TRENDING, k=30, constraints=R.Constraints(include_categories=["hats", "bags"]))
    assert len(inc.items) == 30 and {i.category for i in inc.items} <= {"hats", "bags"}
    exc = await store.recommend(R.SIMILAR, k=30, product_id=product_id(0, 1),
                                constraints=R.Constraints(exclude_categories=["shoes"]))
    assert exc.items and all(i.category != "shoes" for i in exc.items)
    unknown = await store.recommend(R.TRENDING, k=5, constraints=R.Constraints(include_categories=["nope"]))
    assert not unknown.items


async def test_max_per_category_diversity(store: Harness) -> None:
    for strategy in (R.SIMILAR, R.TRENDING, R.FOR_YOU):
        response = await store.recommend(strategy, k=12, product_id=product_id(0, 1),
                                         user=R.UserSignals(recent_product_ids=[product_id(0, 1)]),
                                         constraints=R.Constraints(max_per_category=2))
        cats = [i.category for i in response.items]
        assert len(cats) == 12 and max(cats.count(c) for c in set(cats)) <= 2, strategy


async def test_exclusions_given_purchased_anchor_and_cart(store: Harness) -> None:
    anchor = product_id(0, 10)
    first = ids(await store.recommend(R.SIMILAR, k=6, product_id=anchor))
    response = await store.recommend(
        R.SIMILAR, k=20, product_id=anchor, cart_product_ids=[first[0]],
        user=R.UserSignals(purchased_product_ids=[first[1]]),
        constraints=R.Constraints(exclude_product_ids=[first[2], "unknown-id"], exclude_purchased=True))
    got = ids(response)
    assert not {anchor, first[0], first[1], first[2]} & set(got)
    kept = await store.recommend(R.SIMILAR, k=20, product_id=anchor,
                                 user=R.UserSignals(purchased_product_ids=[first[1]]))
    assert first[1] in ids(kept)  # purchased stays unless asked


async def test_fewer_than_k_is_topped_up_with_trending(store: Harness) -> None:
    response = await store.recommend(R.RECENTLY_VIEWED, k=10, user=R.UserSignals(recent_product_ids=["shoes-001"]))
    assert ids(response)[0] == "shoes-001" and len(response.items) == 10
    assert not response.fallback
    assert {i.reason for i in response.items[1:]} == {"trending now"}


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("request_kw", "code", "text"), [
    ({"strategy": R.SIMILAR, "k": 0, "product_id": "shoes-001"}, grpc.StatusCode.INVALID_ARGUMENT, "k must"),
    ({"strategy": R.SIMILAR, "k": 201, "product_id": "shoes-001"}, grpc.StatusCode.INVALID_ARGUMENT, "k must"),
    ({"strategy": R.STRATEGY_UNSPECIFIED, "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "strategy"),
    ({"strategy": R.SIMILAR, "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "needs product_id"),
    ({"strategy": R.SIMILAR, "k": 5, "product_id": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown product_id"),
    ({"strategy": R.UP_SELL, "k": 5, "product_id": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown product_id"),
    ({"strategy": R.CART_COMPLEMENTS, "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "cart_product_ids"),
    ({"strategy": R.CART_COMPLEMENTS, "k": 5, "cart_product_ids": ["x", "y"]}, grpc.StatusCode.NOT_FOUND,
     "cart_product_ids"),
    ({"strategy": R.TRENDING, "k": 5, "constraints": R.Constraints(min_price=50, max_price=10)},
     grpc.StatusCode.INVALID_ARGUMENT, "min_price"),
    ({"strategy": R.TRENDING, "k": 5, "constraints": R.Constraints(max_price=-1)},
     grpc.StatusCode.INVALID_ARGUMENT, "max_price"),
    ({"strategy": R.TRENDING, "k": 5, "constraints": R.Constraints(include_categories=["a"],
                                                                    exclude_categories=["a"])},
     grpc.StatusCode.INVALID_ARGUMENT, "both included and excluded"),
    ({"strategy": R.TRENDING, "k": 5, "constraints": R.Constraints(max_per_category=-2)},
     grpc.StatusCode.INVALID_ARGUMENT, "max_per_category"),
    ({"strategy": R.TRENDING, "k": 5, "user": R.UserSignals(budget=float("nan"))},
     grpc.StatusCode.INVALID_ARGUMENT, "budget"),
    ({"strategy": R.TRENDING, "k": 5, "constraints": R.Constraints(exclude_product_ids=["x"] * 1001)},
     grpc.StatusCode.INVALID_ARGUMENT, "at most 1000"),
    ({"strategy": 99, "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "strategy"),
])
async def test_bad_recommend_requests_get_a_clear_status(store: Harness, request_kw: dict[str, object],
                                                        code: grpc.StatusCode, text: str) -> None:
    err = await assert_status(store.stub.Recommend(R.RecommendRequest(**request_kw), timeout=5), code)  # type: ignore[arg-type]
    assert text in err.details()
