"""Fixtures: a recommendation service on a free port with a small synthetic store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from services.recommendation.app import build_service
from services.recommendation.config import RecommendationConfig
from services.recommendation.service import RecommendationService
from tests.support import serving
from vitrine.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc

CATEGORIES = ("shoes", "shirts", "hats", "bags", "socks", "watches")
PER_CATEGORY = 40


def product_id(category: int, i: int) -> str:
    return f"{CATEGORIES[category]}-{i:03d}"


def catalog() -> list[common_pb2.Product]:
    """240 products: 40 per category, prices 10..49 within each category, all in stock."""
    out = []
    for c, name in enumerate(CATEGORIES):
        for i in range(PER_CATEGORY):
            out.append(common_pb2.Product(product_id=product_id(c, i), title=f"{name.title()} {i}",
                                          category=name, brand=f"brand{i % 5}", price=10.0 + i,
                                          stock=5, currency="EUR"))
    return out


def sessions(n: int = 1500, seed: int = 0) -> list[list[str]]:
    """Sessions that stay mostly inside one category, neighbours in id order close together."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.integers(len(CATEGORIES)))
        start = int(rng.integers(PER_CATEGORY))
        length = int(rng.integers(3, 9))
        items = [(start + int(rng.integers(-3, 4))) % PER_CATEGORY for _ in range(length)]
        session = [product_id(c, i) for i in items]
        if rng.random() < 0.1:
            session.append(product_id(int(rng.integers(len(CATEGORIES))), int(rng.integers(PER_CATEGORY))))
        out.append(session)
    return out


def config_for(data_dir: Path, **overrides: object) -> RecommendationConfig:
    # no event feed unless a test starts a profile service to follow (tests/recommendation/test_feed.py)
    values: dict[str, object] = {"port": 0, "data_dir": str(data_dir), "snapshot_seconds": 0.0,
                                 "follow_events": False}
    values.update(overrides)
    return RecommendationConfig(**values)  # type: ignore[arg-type]


async def stream(items: Iterable[object]) -> AsyncIterator[object]:
    for item in items:
        yield item


def train_request(data: list[list[str]], **kw: object) -> recommend_pb2.TrainRequest:
    return recommend_pb2.TrainRequest(
        sessions=[recommend_pb2.TrainRequest.Session(product_ids=s) for s in data], **kw)  # type: ignore[arg-type]


class Harness:
    def __init__(self, service: RecommendationService, stub: recommend_pb2_grpc.RecommendServiceStub,
                 address: str) -> None:
        self.service = service
        self.stub = stub
        self.address = address

    async def recommend(self, strategy: int, k: int = 10, **kw: object) -> recommend_pb2.RecommendResponse:
        request = recommend_pb2.RecommendRequest(strategy=strategy, k=k, **kw)  # type: ignore[arg-type]
        return await self.stub.Recommend(request, timeout=10)

    async def stock(self, updates: list[recommend_pb2.StockUpdate]) -> recommend_pb2.UpsertSummary:
        return await self.stub.UpdateInventory(iter(updates), timeout=10)


@pytest.fixture
async def empty(tmp_path: Path) -> AsyncIterator[Harness]:
    """A running service with an empty catalog."""
    service = build_service(config_for(tmp_path))
    async with serving(service, service.config) as running, \
            grpc.aio.insecure_channel(running.address) as channel:
        yield Harness(service, recommend_pb2_grpc.RecommendServiceStub(channel), running.address)


@pytest.fixture
async def store(empty: Harness) -> Harness:
    """The synthetic catalog upserted and a model trained on `sessions()`."""
    summary = await empty.stub.UpsertProducts(iter(catalog()), timeout=10)
    assert summary.upserted == len(CATEGORIES) * PER_CATEGORY and summary.rejected == 0
    await empty.stub.Train(train_request(sessions(), dimensions=16), timeout=60)
    return empty
