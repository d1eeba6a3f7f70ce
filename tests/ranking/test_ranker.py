"""The learned ranker: deterministic training, trained by Train through a real server and swapped in
with the model, FOR_YOU and Rank served by it under every constraint, a model without it still served."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from scoring.shopper import DEFAULT_PURCHASE_WEIGHT, DEFAULT_RECENCY_DECAY
from services.recommendation.app import build_service
from services.recommendation.ranker_model import RANKER_FILE, RANKER_STATS_FILE, train_ranker
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
from tests.support import serving
from vitrine.v1 import recommend_pb2, recommend_pb2_grpc

R = recommend_pb2
SESSIONS = 6_000   # enough held-out steps (newest 10 %) for the ranker to be learned
HATS = 2


def _rows(data: list[list[str]]) -> tuple[list[np.ndarray], int]:
    row = {product_id(c, i): c * PER_CATEGORY + i for c in range(len(CATEGORIES)) for i in range(PER_CATEGORY)}
    return [np.asarray([row[p] for p in s], np.int64) for s in data], len(row)


def _train(rows: list[np.ndarray], n: int, seed: int) -> object:
    return train_ranker(rows, n, repeat_weight=1.0, recency_decay=DEFAULT_RECENCY_DECAY,
                        purchase_weight=DEFAULT_PURCHASE_WEIGHT, seed=seed, show_progress=False)


def test_deterministic_for_a_fixed_seed() -> None:
    rows, n = _rows(sessions(SESSIONS))
    a, b = _train(rows, n, 0), _train(rows, n, 0)
    assert a is not None and b is not None
    assert a.booster.model_to_string() == b.booster.model_to_string()  # type: ignore[attr-defined]
    x = np.random.default_rng(0).random((50, a.booster.num_feature())).astype(np.float32)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.predict(x), b.predict(x))  # type: ignore[attr-defined]


def test_too_few_sessions_learn_no_ranker() -> None:
    rows, n = _rows(sessions(300))
    assert _train(rows, n, 0) is None


@pytest.fixture
async def ranked(tmp_path: Path) -> AsyncIterator[Harness]:
    service = build_service(config_for(tmp_path))
    async with serving(service, service.config) as running, \
            grpc.aio.insecure_channel(running.address) as channel:
        h = Harness(service, recommend_pb2_grpc.RecommendServiceStub(channel), running.address)
        await h.stub.UpsertProducts(iter(catalog()), timeout=10)
        await h.stub.Train(train_request(sessions(SESSIONS), dimensions=16), timeout=120)
        yield h


def ids(response: recommend_pb2.RecommendResponse) -> list[str]:
    return [item.product_id for item in response.items]


async def test_train_learns_the_ranker_and_serves_it(ranked: Harness) -> None:
    model = ranked.service.recommender.model
    assert model is not None and model.ranker is not None
    directory = ranked.service.models.directory / model.version
    assert (directory / RANKER_FILE).is_file() and (directory / RANKER_STATS_FILE).is_file()
    assert model.meta["ranker"]["groups"] >= 1_000
    user = R.UserSignals(recent_product_ids=[product_id(HATS, 14), product_id(HATS, 15)], recent_view_counts=[2, 1])
    response = await ranked.recommend(R.FOR_YOU, k=20, user=user)
    got = ids(response)
    assert len(got) == 20 and len(set(got)) == 20 and not response.fallback
    assert sum(p.startswith("hats-") for p in got[:10]) >= 8
    assert [i.score for i in response.items] == sorted((i.score for i in response.items), reverse=True)


async def test_rank_with_the_ranker_keeps_every_constraint(ranked: Harness) -> None:
    await ranked.stock([R.StockUpdate(product_id=product_id(0, 10), stock=0)])
    listed = [product_id(c, i) for i in range(10, 20) for c in range(len(CATEGORIES))]
    purchased = product_id(HATS, 11)
    user = R.UserSignals(recent_product_ids=[product_id(HATS, 14), product_id(1, 15)],
                         purchased_product_ids=[purchased])
    constraints = R.Constraints(max_price=25.0, min_price=12.0, exclude_product_ids=[product_id(1, 12)],
                                exclude_categories=["bags"], max_per_category=3, exclude_purchased=True)
    response = await ranked.stub.Rank(R.RankRequest(product_ids=listed, user=user, constraints=constraints),
                                      timeout=10)
    got = ids(response)
    assert got and product_id(0, 10) not in got and product_id(1, 12) not in got and purchased not in got
    assert set(got) <= set(listed) and len(set(got)) == len(got)
    assert all(12.0 <= item.price <= 25.0 for item in response.items)
    assert not any(p.startswith("bags-") for p in got)
    per_category: dict[str, int] = {}
    for item in response.items:
        per_category[item.category] = per_category.get(item.category, 0) + 1
    assert max(per_category.values()) == 3
    assert not response.fallback and response.strategy_used == "RANK"
    k3 = await ranked.stub.Rank(R.RankRequest(product_ids=listed, user=user, k=3), timeout=10)
    full = await ranked.stub.Rank(R.RankRequest(product_ids=listed, user=user), timeout=10)
    assert ids(k3) == ids(full)[:3] and len(ids(full)) == len(listed) - 1   # out of stock dropped
    only_hats = ids(await ranked.stub.Rank(R.RankRequest(product_ids=listed, user=user,
                                                         constraints=R.Constraints(include_categories=["hats"])),
                                           timeout=10))
    assert sorted(only_hats) == sorted(p for p in listed if p.startswith("hats-"))


async def test_rank_on_an_empty_or_unknown_list(ranked: Harness) -> None:
    user = R.UserSignals(recent_product_ids=[product_id(HATS, 14)])
    empty = await ranked.stub.Rank(R.RankRequest(product_ids=[], user=user), timeout=10)
    assert not empty.items and empty.unknown_products == 0 and empty.strategy_used == "RANK"
    unknown = await ranked.stub.Rank(R.RankRequest(product_ids=["nope-1", "nope-2"], user=user), timeout=10)
    assert not unknown.items and unknown.unknown_products == 2
    mixed = await ranked.stub.Rank(R.RankRequest(product_ids=["nope-1", product_id(HATS, 3)], user=user), timeout=10)
    assert ids(mixed) == [product_id(HATS, 3)] and mixed.unknown_products == 1


async def test_a_model_without_a_ranker_still_loads_and_serves(ranked: Harness, tmp_path: Path) -> None:
    model = ranked.service.recommender.model
    assert model is not None
    directory = ranked.service.models.directory / model.version
    for name in (RANKER_FILE, RANKER_STATS_FILE):
        os.remove(directory / name)
    loaded = ranked.service.models.load(model.version, ranked.service.catalog.row_of, len(ranked.service.catalog))
    assert loaded.ranker is None and loaded.neighbours is not None
    ranked.service.recommender.model = loaded   # what a restart or a replica following `current` does
    user = R.UserSignals(recent_product_ids=[product_id(HATS, 14), product_id(HATS, 15)])
    response = await ranked.recommend(R.FOR_YOU, k=20, user=user)
    assert len(ids(response)) == 20 and not response.fallback and response.model_version == model.version
    listed = [product_id(HATS, i) for i in range(20)] + [product_id(0, i) for i in range(20)]
    rank = await ranked.stub.Rank(R.RankRequest(product_ids=listed, user=user), timeout=10)
    assert sorted(ids(rank)) == sorted(listed) and ids(rank)[0].startswith("hats-")
