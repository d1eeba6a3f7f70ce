"""Rank with a hostile `recent_view_counts` (2^31 - 1 views) answers at once. Found by the fuzzer:
the learned second stage repeated each viewed row by its count with np.repeat, allocating
billions of rows and stopping the recommendation service's event loop for over a minute (every
call in flight then missed its deadline). The repeat is capped (second_stage.MAX_VIEW_REPEATS)."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.reliability.inprocess import start_inprocess_suite
from vitrine.v1 import recommend_pb2, recommend_pb2_grpc


async def test_rank_with_an_enormous_view_count_answers_in_time(tmp_path: Path) -> None:
    suite = await start_inprocess_suite(tmp_path)
    try:
        async with grpc.aio.insecure_channel(suite.address("recommendation")) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            trending = await stub.Recommend(recommend_pb2.RecommendRequest(strategy=recommend_pb2.TRENDING, k=5),
                                            timeout=10)
            ids = [item.product_id for item in trending.items]
            request = recommend_pb2.RankRequest(
                product_ids=ids, user=recommend_pb2.UserSignals(
                    user_id="fz", recent_product_ids=[ids[0], "p-1"], recent_view_counts=[2**31 - 1, 16]))
            reply = await stub.Rank(request, timeout=10)  # was > 60 s
    finally:
        await suite.close()
    assert {item.product_id for item in reply.items} <= set(ids)
