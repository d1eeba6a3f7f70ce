"""RecommendBatch through a real server: each request answered as Recommend would, in order,
and a failing one reported in its own result without failing the others."""

from __future__ import annotations

import grpc

from services.recommendation.config import MAX_BATCH_REQUESTS
from tests.recommendation.conftest import Harness, product_id
from tests.support import assert_status
from vitrine.v1 import recommend_pb2

R = recommend_pb2
SHOES_ANCHOR = product_id(0, 10)


async def test_batch_answers_like_single_calls_in_order(store: Harness) -> None:
    requests = [R.RecommendRequest(strategy=R.SIMILAR, k=5, product_id=SHOES_ANCHOR),
                R.RecommendRequest(strategy=R.TRENDING, k=3),
                R.RecommendRequest(strategy=R.FOR_YOU, k=4,
                                   user=R.UserSignals(recent_product_ids=[SHOES_ANCHOR]))]
    reply = await store.stub.RecommendBatch(R.RecommendBatchRequest(requests=requests), timeout=10)
    assert [r.code for r in reply.results] == [0, 0, 0]
    for request, result in zip(requests, reply.results, strict=True):
        single = await store.stub.Recommend(request, timeout=10)
        assert [i.product_id for i in result.response.items] == [i.product_id for i in single.items]
        assert result.response.strategy_used == single.strategy_used
        assert result.response.model_version == single.model_version
    assert [len(r.response.items) for r in reply.results] == [5, 3, 4]


async def test_a_failing_request_does_not_fail_the_others(store: Harness) -> None:
    requests = [R.RecommendRequest(strategy=R.TRENDING, k=3),
                R.RecommendRequest(strategy=R.SIMILAR, k=5),  # no anchor: INVALID_ARGUMENT
                R.RecommendRequest(strategy=R.SIMILAR, k=5, product_id="no-such-product"),  # NOT_FOUND
                R.RecommendRequest(strategy=R.TRENDING, k=0)]  # k out of range
    reply = await store.stub.RecommendBatch(R.RecommendBatchRequest(requests=requests), timeout=10)
    codes = [grpc.StatusCode.OK.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0],
             grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert [r.code for r in reply.results] == codes
    assert len(reply.results[0].response.items) == 3 and not reply.results[0].error
    for failed in reply.results[1:]:
        assert failed.error and not failed.HasField("response")
    # The same errors as the single call gives.
    await assert_status(store.stub.Recommend(requests[1], timeout=10), grpc.StatusCode.INVALID_ARGUMENT)


async def test_empty_and_oversized_batches(store: Harness) -> None:
    reply = await store.stub.RecommendBatch(R.RecommendBatchRequest(), timeout=10)
    assert list(reply.results) == []
    too_many = [R.RecommendRequest(strategy=R.TRENDING, k=1)] * (MAX_BATCH_REQUESTS + 1)
    err = await assert_status(store.stub.RecommendBatch(R.RecommendBatchRequest(requests=too_many), timeout=10),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert str(MAX_BATCH_REQUESTS) in (err.details() or "")


async def test_requests_past_the_callers_deadline_are_not_computed(store: Harness) -> None:
    from services.recommendation.servicer import query_from_proto

    queries = [query_from_proto(R.RecommendRequest(strategy=R.TRENDING, k=2))] * 3
    calls = iter([False, True, True])  # the deadline passes after the first request
    outcomes = store.service.recommend_many(queries, expired=lambda: next(calls))
    assert len(outcomes[0].items) == 2  # type: ignore[union-attr]
    assert [getattr(o, "code_name", "OK") for o in outcomes] == ["OK", "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]


async def test_rank_requests_ride_in_the_same_batch(store: Harness) -> None:
    listed = [product_id(2, i) for i in range(5)] + [product_id(0, i) for i in range(5)]
    ranks = [R.RankRequest(product_ids=listed, k=4, user=R.UserSignals(recent_product_ids=[SHOES_ANCHOR])),
             R.RankRequest(product_ids=["bad id"])]          # INVALID_ARGUMENT, alone
    reply = await store.stub.RecommendBatch(R.RecommendBatchRequest(
        requests=[R.RecommendRequest(strategy=R.TRENDING, k=3)], ranks=ranks), timeout=10)
    assert [r.code for r in reply.results] == [0]
    assert [r.code for r in reply.rank_results] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    single = await store.stub.Rank(ranks[0], timeout=10)
    assert [i.product_id for i in reply.rank_results[0].response.items] == [i.product_id for i in single.items]
    assert reply.rank_results[0].response.strategy_used == "RANK"
    too_many = R.RecommendBatchRequest(requests=[R.RecommendRequest(strategy=R.TRENDING, k=1)] * MAX_BATCH_REQUESTS,
                                       ranks=[ranks[0]])
    await assert_status(store.stub.RecommendBatch(too_many, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
