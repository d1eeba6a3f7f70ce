"""FollowCatalog through a real in-process server: every stock and price change exactly once, in
order, from a cursor, live, and across a restart on the same data directory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import lmdb
import pytest
from prometheus_client import REGISTRY

from services.recommendation.app import build_service
from services.recommendation.changes import ChangeLog
from tests.recommendation.conftest import Harness, config_for
from tests.support import assert_status, serving
from vitrine.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc

WAIT = 10.0  # seconds any single expected item may take (bounded wait, not a sleep)


def products(n: int, stock: int = 5, price: float = 10.0) -> list[common_pb2.Product]:
    return [common_pb2.Product(product_id=f"p{i}", title=f"P {i}", category="c", price=price + i, stock=stock)
            for i in range(n)]


async def take(stub: recommend_pb2_grpc.RecommendServiceStub, from_seq: int,
               n: int) -> list[recommend_pb2.CatalogChange]:
    """The first n changes of a feed opened at from_seq (the stream is then cancelled)."""
    call = stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=from_seq))
    out = []
    try:
        for _ in range(n):
            out.append(await asyncio.wait_for(call.read(), WAIT))
    finally:
        call.cancel()
    return out


async def nothing_more(stub: recommend_pb2_grpc.RecommendServiceStub, from_seq: int) -> None:
    """A feed opened at from_seq has nothing yet: an UpdateInventory marker is the next item."""
    call = stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=from_seq))
    try:
        await stub.UpdateInventory(iter([recommend_pb2.StockUpdate(product_id="p0", stock=777)]), timeout=10)
        change = await asyncio.wait_for(call.read(), WAIT)
        assert (change.product_id, change.stock) == ("p0", 777)
    finally:
        call.cancel()


async def test_upserts_and_stock_updates_are_changes_in_order(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter(products(3)), timeout=10)
    created = await take(empty.stub, 0, 3)
    assert [c.seq for c in created] == [1, 2, 3]
    assert [(c.product_id, c.stock, c.previous_stock, c.price, c.created) for c in created] == [
        ("p0", 5, 0, 10.0, True), ("p1", 5, 0, 11.0, True), ("p2", 5, 0, 12.0, True)]
    assert all(c.changed_ms > 0 for c in created)

    # a title edit moves neither stock nor price: no change; a price edit by upsert is one
    edited = products(3)
    edited[0].title = "renamed"
    edited[1].price = 8.0
    await empty.stub.UpsertProducts(iter(edited), timeout=10)
    await empty.stock([recommend_pb2.StockUpdate(product_id="p2", stock=0),
                       recommend_pb2.StockUpdate(product_id="p2", stock=0),          # moves nothing
                       recommend_pb2.StockUpdate(product_id="p0", stock=4, price=9.5)])
    later = await take(empty.stub, 4, 3)
    assert [(c.seq, c.product_id, c.previous_stock, c.stock, c.previous_price, c.price, c.created)
            for c in later] == [(4, "p1", 5, 5, 11.0, 8.0, False), (5, "p2", 5, 0, 12.0, 12.0, False),
                                (6, "p0", 5, 4, 10.0, 9.5, False)]
    await nothing_more(empty.stub, 7)


async def test_live_changes_reach_a_waiting_follower(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter(products(2)), timeout=10)
    call = empty.stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=0))
    try:
        first = [await asyncio.wait_for(call.read(), WAIT) for _ in range(2)]
        assert [c.seq for c in first] == [1, 2]
        assert (REGISTRY.get_sample_value("vitrine_recommendation_catalog_followers") or 0) >= 1
        # caught up: the follower now waits; each new commit wakes it
        for stock in (0, 3):
            await empty.stock([recommend_pb2.StockUpdate(product_id="p1", stock=stock)])
            change = await asyncio.wait_for(call.read(), WAIT)
            assert (change.product_id, change.stock) == ("p1", stock)
        assert change.seq == 4 and change.previous_stock == 0
    finally:
        call.cancel()


async def test_two_followers_see_the_same_sequence(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter(products(5)), timeout=10)
    updates = [recommend_pb2.StockUpdate(product_id=f"p{i % 5}", stock=i) for i in range(20)]
    a, b, _ = await asyncio.gather(take(empty.stub, 0, 25), take(empty.stub, 0, 25), empty.stock(updates))
    assert [c.seq for c in a] == list(range(1, 26))
    assert a == b


async def test_resume_after_a_restart_on_the_same_data_directory(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter(products(4)), timeout=10)
        seen = await take(stub, 0, 2)          # a follower got two, then went away
        cursor = seen[-1].seq + 1
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        info = await stub.GetModelInfo(recommend_pb2.GetModelInfoRequest(), timeout=10)
        assert info.products == 4            # the change log is no product in the catalog scan
        await stub.UpdateInventory(iter([recommend_pb2.StockUpdate(product_id="p3", stock=0)]), timeout=10)
        rest = await take(stub, cursor, 3)
        assert [(c.seq, c.product_id) for c in rest] == [(3, "p2"), (4, "p3"), (5, "p3")]
        assert rest[-1].previous_stock == 5 and rest[-1].stock == 0


async def test_a_cursor_beyond_the_end_or_negative_is_out_of_range(empty: Harness) -> None:
    await empty.stub.UpsertProducts(iter(products(2)), timeout=10)
    for bad in (4, -1):
        call = empty.stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=bad))
        err = await assert_status(call.read(), grpc.StatusCode.OUT_OF_RANGE)
        assert "from_seq" in (err.details() or "")
    await nothing_more(empty.stub, 3)   # the end itself is a valid cursor: it waits


async def test_train_created_products_are_changes(empty: Harness) -> None:
    request = recommend_pb2.TrainRequest(
        sessions=[recommend_pb2.TrainRequest.Session(product_ids=["a", "b", "c"])] * 5,
        dimensions=4, create_missing_products=True)
    await empty.stub.Train(request, timeout=60)
    created = await take(empty.stub, 0, 3)
    assert sorted(c.product_id for c in created) == ["a", "b", "c"] and all(c.created for c in created)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ChangeLog]:
    env = lmdb.open(str(tmp_path / "changes"), max_dbs=2)
    yield ChangeLog(env, keep=5)
    env.close()


def _append(log: ChangeLog, product_ids: list[str]) -> None:
    with log.env.begin(write=True) as txn:
        log.append(txn, [recommend_pb2.CatalogChange(product_id=p) for p in product_ids])


def test_the_log_keeps_the_newest_and_numbers_without_gaps(log: ChangeLog) -> None:
    assert log.bounds() == (1, 0)
    _append(log, ["a", "b", "c"])
    _append(log, ["d", "e", "f", "g"])
    assert log.bounds() == (3, 7)
    assert [(c.seq, c.product_id) for c in log.read(0, 10)] == [(3, "c"), (4, "d"), (5, "e"), (6, "f"), (7, "g")]
    assert [c.seq for c in log.read(5, 2)] == [5, 6]
    assert log.read(8, 10) == []


async def test_a_pruned_cursor_is_out_of_range_not_skipped(log: ChangeLog) -> None:
    from services.recommendation.changes import ChangeFeed, OutOfRange, follow

    _append(log, [f"p{i}" for i in range(8)])       # 1..3 pruned
    with pytest.raises(OutOfRange, match="pruned"):
        await anext(follow(log, ChangeFeed(), 2))
    first = await anext(follow(log, ChangeFeed(), 0))
    assert first.seq == 4
