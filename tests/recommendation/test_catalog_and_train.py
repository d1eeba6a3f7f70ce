"""UpsertProducts, UpdateInventory, Observe, Train, GetProduct, GetModelInfo through a real server,
persistence across a restart, and a model swap under load."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.recommendation.app import build_service
from tests.recommendation.conftest import (
    CATEGORIES,
    PER_CATEGORY,
    Harness,
    catalog,
    config_for,
    product_id,
    sessions,
    train_request,
)
from tests.support import assert_status, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc, recommend_pb2, recommend_pb2_grpc

R = recommend_pb2
N_PRODUCTS = len(CATEGORIES) * PER_CATEGORY


async def test_upsert_rejects_bad_products_and_keeps_the_good(empty: Harness) -> None:
    products = [
        common_pb2.Product(product_id="ok-1", price=3.5, stock=2, category="a", title="One"),
        common_pb2.Product(product_id="", price=1.0),
        common_pb2.Product(product_id="bad price", price=1.0),
        common_pb2.Product(product_id="neg", price=-1.0),
        common_pb2.Product(product_id="nan", price=float("nan")),
        common_pb2.Product(product_id="zero-emb", embedding=[0.0, 0.0]),
        common_pb2.Product(product_id="ok-2", price=4.0, stock=0, category="b"),
    ]
    summary = await empty.stub.UpsertProducts(iter(products), timeout=10)
    assert (summary.upserted, summary.rejected) == (2, 5)
    assert "product 1 ('')" in summary.errors[0] and "empty" in summary.errors[0]
    assert any("whitespace" in e for e in summary.errors)
    for bad in ("bad price", "neg", "nan", "zero-emb"):
        await assert_status(empty.stub.GetProduct(R.GetProductRequest(product_id=bad.replace(" ", "-")),
                                                  timeout=5), grpc.StatusCode.NOT_FOUND)
    got = await empty.stub.GetProduct(R.GetProductRequest(product_id="ok-1"), timeout=5)
    assert (got.title, got.price, got.stock, got.category) == ("One", 3.5, 2, "a")
    info = await empty.stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
    assert (info.products, info.in_stock, info.model_version) == (2, 1, "")
    await assert_status(empty.stub.GetProduct(R.GetProductRequest(product_id=""), timeout=5),
                        grpc.StatusCode.INVALID_ARGUMENT)
    # upsert again changes in place
    await empty.stub.UpsertProducts(iter([common_pb2.Product(product_id="ok-1", price=9.0, stock=0)]), timeout=5)
    assert (await empty.stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)).in_stock == 0


async def test_update_inventory_rejects_unknown_and_bad_updates_without_changes(store: Harness) -> None:
    pid = product_id(0, 0)
    summary = await store.stock([
        R.StockUpdate(product_id="missing", stock=3),
        R.StockUpdate(product_id=pid, stock=7, price=-5.0),
        R.StockUpdate(product_id=pid, stock=9),
    ])
    assert (summary.upserted, summary.rejected) == (1, 2)
    assert "unknown product" in summary.errors[0] and "price" in summary.errors[1]
    product = await store.stub.GetProduct(R.GetProductRequest(product_id=pid), timeout=5)
    assert (product.stock, product.price) == (9, 10.0)  # price untouched: `price` was not set


async def test_observe_rejects_events_without_product(store: Harness) -> None:
    events = [common_pb2.Event(event_id="e1", type=common_pb2.PURCHASE, order_id="o"),
              common_pb2.Event(event_id="e2", type=common_pb2.PRODUCT_VIEW, product_id="not-in-catalog")]
    summary = await store.stub.Observe(iter(events), timeout=5)
    assert (summary.observed, summary.ignored, summary.rejected) == (0, 1, 1)
    assert "PURCHASE needs product_id" in summary.errors[0]
    assert not store.service.signals.trending.items.any()


async def test_train_reports_and_swaps_the_model(store: Harness) -> None:
    info = await store.stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
    assert info.items == N_PRODUCTS and info.dimensions == 16 and info.index_type == "flat"
    assert info.recall_at_10 == 1.0 and info.trained_ms > 0
    reply = await store.stub.Train(train_request(sessions(seed=1), dimensions=8), timeout=60)
    assert reply.model_version != info.model_version and reply.items == N_PRODUCTS
    assert reply.interactions > 1500 * 3 and reply.index_type == "flat" and reply.products_created == 0
    response = await store.recommend(R.SIMILAR, k=3, product_id=product_id(0, 0))
    assert response.model_version == reply.model_version


async def test_bad_train_requests_change_nothing(store: Harness) -> None:
    before = await store.stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
    cases = [
        (train_request([["a", "b"]], dimensions=1), grpc.StatusCode.INVALID_ARGUMENT, "dimensions"),
        (train_request([["a", "b"]], dimensions=5000), grpc.StatusCode.INVALID_ARGUMENT, "dimensions"),
        (train_request([["a", "b"]], from_event_log=True), grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        (train_request([["ok", "has space"]], create_missing_products=True), grpc.StatusCode.INVALID_ARGUMENT,
         "sessions[0].product_ids[1]"),
        (train_request([["x1", "x2"]]), grpc.StatusCode.FAILED_PRECONDITION, "nothing to learn"),
        (train_request([]), grpc.StatusCode.FAILED_PRECONDITION, "nothing to learn"),
    ]
    for request, code, text in cases:
        err = await assert_status(store.stub.Train(request, timeout=30), code)
        assert text in err.details()
    after = await store.stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
    assert (after.model_version, after.products) == (before.model_version, before.products)


async def test_train_creates_missing_products_in_stock_without_price(empty: Harness) -> None:
    data = [["n1", "n2", "n3"], ["n2", "n3", "n4"], ["n1", "n3"], ["n4", "n1"]] * 5
    reply = await empty.stub.Train(train_request(data, dimensions=4, create_missing_products=True), timeout=30)
    assert reply.products_created == 4 and reply.items == 4
    product = await empty.stub.GetProduct(R.GetProductRequest(product_id="n1"), timeout=5)
    assert product.stock > 0 and product.price == 0
    response = await empty.recommend(R.SIMILAR, k=3, product_id="n1")
    assert sorted(p.product_id for p in response.items) == ["n2", "n3", "n4"]


async def test_provided_embeddings_take_precedence(empty: Harness) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 8)).astype(np.float32)
    products = []
    for i in range(30):  # three clusters of embeddings, no sessions at all
        e = base[i % 3] + 0.05 * rng.standard_normal(8).astype(np.float32)
        products.append(common_pb2.Product(product_id=f"e{i}", price=1.0, stock=1, embedding=e.tolist()))
    products.append(common_pb2.Product(product_id="other-dim", price=1.0, stock=1, embedding=[1.0, 2.0]))
    await empty.stub.UpsertProducts(iter(products), timeout=10)
    reply = await empty.stub.Train(R.TrainRequest(dimensions=8), timeout=30)
    assert reply.items == 30 and reply.interactions == 0
    response = await empty.recommend(R.SIMILAR, k=9, product_id="e0")
    assert {int(p.product_id[1:]) % 3 for p in response.items} == {0}


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter(catalog()), timeout=10)
        trained = await stub.Train(train_request(sessions(), dimensions=8), timeout=60)
        await stub.UpdateInventory(iter([R.StockUpdate(product_id=product_id(1, 1), stock=0, price=77.0)]),
                                   timeout=5)
        await stub.Observe(iter([common_pb2.Event(event_id=f"v{i}", type=common_pb2.PURCHASE, order_id="o",
                                                  product_id=p)
                                 for i, p in enumerate([product_id(2, 2), product_id(3, 3)])]), timeout=5)
        similar = await stub.Recommend(R.RecommendRequest(strategy=R.SIMILAR, k=5, product_id=product_id(0, 3)),
                                       timeout=5)
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        info = await stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
        assert (info.model_version, info.products, info.in_stock) == (trained.model_version, N_PRODUCTS,
                                                                      N_PRODUCTS - 1)
        product = await stub.GetProduct(R.GetProductRequest(product_id=product_id(1, 1)), timeout=5)
        assert (product.stock, product.price) == (0, 77.0)
        assert service.model is not None and service.model.neighbours is not None
        assert service.catalog.ids[0] != product_id(0, 0)  # rows changed order: the table was remapped
        again = await stub.Recommend(R.RecommendRequest(strategy=R.SIMILAR, k=5, product_id=product_id(0, 3)),
                                     timeout=5)
        assert [i.product_id for i in again.items] == [i.product_id for i in similar.items]
        together = await stub.Recommend(R.RecommendRequest(strategy=R.BOUGHT_TOGETHER, k=1,
                                                           product_id=product_id(2, 2)), timeout=5)
        assert together.items[0].product_id == product_id(3, 3)
        trending = await stub.Recommend(R.RecommendRequest(strategy=R.TRENDING, k=2), timeout=5)
        assert {i.product_id for i in trending.items} == {product_id(2, 2), product_id(3, 3)}
        by_category = service.signals.trending.category_values(service.signals.trending.ref_ms)
        assert by_category[service.catalog.category_of["hats"]] > 0


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
async def test_approximate_index_above_the_flat_threshold(tmp_path: Path, kind: str) -> None:
    config = config_for(tmp_path, flat_index_max_items=100, index_kind=kind, hnsw_m=8, hnsw_ef_search=8)
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter(catalog()), timeout=10)
        reply = await stub.Train(train_request(sessions(), dimensions=16), timeout=60)
        assert reply.index_type == kind and reply.recall_at_10 >= 0.95
        info = await stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)
        assert info.index_type == kind and info.recall_at_10 == reply.recall_at_10
        assert info.ef_search >= 8 if kind == "hnsw" else info.ef_search == 0  # ef_search: HNSW only
        similar = await stub.Recommend(R.RecommendRequest(strategy=R.SIMILAR, k=10, product_id=product_id(0, 3)),
                                       timeout=5)
        assert len(similar.items) == 10 and sum(i.category == "shoes" for i in similar.items) >= 8


async def test_swapping_the_model_under_load_fails_no_request(store: Harness) -> None:
    stop = asyncio.Event()
    answered: list[str] = []
    failures: list[BaseException] = []

    async def fire() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                strategy = (R.SIMILAR, R.FOR_YOU, R.UP_SELL)[i % 3]
                response = await store.recommend(strategy, k=10, product_id=product_id(i % 6, i % 40),
                                                 user=R.UserSignals(recent_product_ids=[product_id(1, i % 40)]))
                answered.append(response.model_version)
            except BaseException as exc:
                failures.append(exc)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(fire()) for _ in range(4)]
    versions = set()
    for seed in range(3):
        reply = await store.stub.Train(train_request(sessions(seed=seed + 10), dimensions=16), timeout=60)
        versions.add(reply.model_version)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    assert not failures, failures[:3]
    assert len(answered) > 20
    assert len(set(answered) & versions) >= 2  # requests were answered by more than one new model


class FakeProfile(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, events: list[common_pb2.Event]) -> None:
        self.events = events
        self.requests: list[profile_pb2.ScanEventsRequest] = []

    async def ScanEvents(self, request: profile_pb2.ScanEventsRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.Event]:
        self.requests.append(request)
        for event in self.events:
            if event.timestamp_ms >= request.since_ms:
                yield event


async def _profile_shard(events: list[common_pb2.Event]) -> tuple[grpc.aio.Server, int, FakeProfile]:
    server = grpc.aio.server()
    fake = FakeProfile(events)
    profile_pb2_grpc.add_ProfileServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, fake


def _events(user: str, data: list[list[str]], t0: int) -> list[common_pb2.Event]:
    out = []
    for s, session in enumerate(data):
        for i, pid in enumerate(reversed(session)):  # stored newest first: the trainer must sort by time
            kind = (common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART)[i % 2]
            out.append(common_pb2.Event(event_id=f"{user}-{s}-{i}", user_id=user, session_id=f"s{s}", type=kind,
                                        product_id=pid, timestamp_ms=t0 + s * 1000 + len(session) - i))
    return out


async def test_train_from_the_event_log_of_every_shard(tmp_path: Path) -> None:
    data = sessions(600)
    shard_a, port_a, fake_a = await _profile_shard(_events("alice", data[:300], 10_000))
    shard_b, port_b, fake_b = await _profile_shard(_events("bob", data[300:], 10_000))
    try:
        config = config_for(tmp_path, profile_addresses=f"127.0.0.1:{port_a}, 127.0.0.1:{port_b}")
        service = build_service(config)
        async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            await stub.UpsertProducts(iter(catalog()), timeout=10)
            reply = await stub.Train(R.TrainRequest(from_event_log=True, since_ms=5, dimensions=8), timeout=60)
            assert reply.interactions == sum(len(s) for s in data)
            assert fake_a.requests[0].since_ms == 5 and fake_b.requests
            assert set(fake_a.requests[0].types) == {common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART,
                                                     common_pb2.PURCHASE}
            similar = await stub.Recommend(R.RecommendRequest(strategy=R.SIMILAR, k=5,
                                                              product_id=product_id(0, 3)), timeout=5)
            assert sum(i.category == "shoes" for i in similar.items) >= 4
    finally:
        await shard_a.stop(0)
        await shard_b.stop(0)


async def test_train_from_an_unreachable_event_log_is_unavailable(tmp_path: Path) -> None:
    config = config_for(tmp_path, profile_addresses="127.0.0.1:1")
    service = build_service(config)
    async with serving(service, config) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        err = await assert_status(stub.Train(R.TrainRequest(from_event_log=True), timeout=30),
                                  grpc.StatusCode.UNAVAILABLE)
        assert "127.0.0.1:1" in err.details()
        assert (await stub.GetModelInfo(R.GetModelInfoRequest(), timeout=5)).model_version == ""


async def test_trending_pool_refresh_off_the_request_path(store: Harness) -> None:
    rec = store.service.recommender
    await store.stub.Observe(iter([common_pb2.Event(event_id="t1", type=common_pb2.PURCHASE, order_id="o",
                                                    product_id=product_id(5, 9))]), timeout=5)
    assert rec.trending_is_stale()
    cache = await asyncio.to_thread(rec.compute_trending)
    rec.set_trending(cache)
    assert not rec.trending_is_stale() and cache.rows[0] == store.service.catalog.row_of[product_id(5, 9)]


async def test_a_serving_replica_follows_models_current(tmp_path: Path) -> None:
    """A trainer elsewhere (sharing the model volume) writes a version and repoints `current`:
    the serving service swaps it in without a restart, and follows a rollback too."""
    service = build_service(config_for(tmp_path, model_poll_seconds=0.05))
    async with serving(service, service.config) as running, \
            grpc.aio.insecure_channel(running.address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter(catalog()), timeout=10)
        first = (await stub.Train(train_request(sessions(), dimensions=16), timeout=60)).model_version
        second = first + "-replica"
        shutil.copytree(service.models.directory / first, service.models.directory / second)

        async def version_in_use(expected: str) -> str:
            for _ in range(100):
                info = await stub.GetModelInfo(recommend_pb2.GetModelInfoRequest(), timeout=5)
                if info.model_version == expected:
                    break
                await asyncio.sleep(0.05)
            return info.model_version

        service.models.set_current(second)
        assert await version_in_use(second) == second
        reply = await stub.Recommend(recommend_pb2.RecommendRequest(
            strategy=recommend_pb2.SIMILAR, k=5, product_id=product_id(0, 0)), timeout=5)
        assert reply.model_version == second and len(reply.items) == 5
        service.models.set_current(first)  # roll back
        assert await version_in_use(first) == first
        assert not await service.follow_current_model()  # nothing new: no reload


async def test_a_broken_model_directory_keeps_the_model_in_use(store: Harness) -> None:
    version = store.service.model.version  # type: ignore[union-attr]
    broken = store.service.models.directory / "broken-version"
    broken.mkdir()
    store.service.models.set_current("broken-version")
    with pytest.raises(FileNotFoundError):
        await store.service.follow_current_model()
    assert store.service.model.version == version  # type: ignore[union-attr]
