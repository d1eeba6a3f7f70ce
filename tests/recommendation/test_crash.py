"""Kill the recommendation service with SIGKILL while upserts and stock updates stream in; after each
restart the catalog-change feed holds every acknowledged change, with seqs 1..n and no gap, and its
last change of each product is the catalog's stock (log and catalog committed together)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from vitrine.health import wait_serving_async
from vitrine.ports import free_port
from vitrine.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ITERATIONS = 5
READY_S = 60.0   # bound on a (re)started service reaching SERVING (kernels load from the Numba cache)
READ_S = 60.0    # bound on reading the whole feed back
PRODUCTS = 40
MARKER = "marker"


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.recommendation", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "WARNING", "--no-follow-events", "--snapshot-seconds", "0", "--model-poll-seconds", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )


async def writer(stub: recommend_pb2_grpc.RecommendServiceStub, acked: dict[str, set[int]],
                 stocks: itertools.count, rng: random.Random) -> None:
    """Stock updates (and re-upserts) with never-repeated stock values until the server dies; records
    each acknowledged value per product."""
    try:
        while True:
            batch = {f"p{rng.randrange(PRODUCTS)}": next(stocks) for _ in range(rng.randrange(1, 30))}
            if rng.random() < 0.3:
                summary = await stub.UpsertProducts(iter([
                    common_pb2.Product(product_id=p, price=1.0, stock=s) for p, s in batch.items()]), timeout=5)
            else:
                summary = await stub.UpdateInventory(iter([
                    recommend_pb2.StockUpdate(product_id=p, stock=s) for p, s in batch.items()]), timeout=5)
            assert summary.upserted == len(batch) and not summary.rejected, summary
            for p, s in batch.items():
                acked.setdefault(p, set()).add(s)
    except grpc.aio.AioRpcError:
        return  # the server was killed


async def verify(stub: recommend_pb2_grpc.RecommendServiceStub, acked: dict[str, set[int]], marker: int) -> int:
    await stub.UpsertProducts(iter([common_pb2.Product(product_id=MARKER, stock=marker)]), timeout=10)
    logged: dict[str, list[int]] = {}
    expected_seq = 1
    call = stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=0))
    async with asyncio.timeout(READ_S):
        async for change in call:
            assert change.seq == expected_seq, f"gap or repeat: seq {change.seq} after {expected_seq - 1}"
            expected_seq += 1
            if change.product_id == MARKER and change.stock == marker:
                break
            logged.setdefault(change.product_id, []).append(change.stock)
    call.cancel()
    for product_id, values in acked.items():
        missing = values - set(logged.get(product_id, []))
        assert not missing, f"acknowledged stock values of {product_id} missing from the feed: {sorted(missing)[:5]}"
    for product_id, values in logged.items():
        if product_id == MARKER:
            continue
        product = await stub.GetProduct(recommend_pb2.GetProductRequest(product_id=product_id), timeout=10)
        assert product.stock == values[-1], f"{product_id}: catalog {product.stock}, feed's last {values[-1]}"
    return expected_seq - 1


@pytest.mark.slow
async def test_acknowledged_catalog_changes_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(7)
    acked: dict[str, set[int]] = {}
    stocks = itertools.count(1)
    markers = itertools.count(10**9)
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = start_server(tmp_path, port)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await wait_serving_async(channel, READY_S, process=process)
            stub = recommend_pb2_grpc.RecommendServiceStub(channel)
            await stub.UpsertProducts(iter([common_pb2.Product(product_id=f"p{i}", price=1.0, stock=0)
                                            for i in range(PRODUCTS)]), timeout=10)
            for _ in range(ITERATIONS):
                writers = [asyncio.create_task(writer(stub, acked, stocks, random.Random(rng.random())))
                           for _ in range(3)]
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # let writes run for a while: the crash moment
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                await asyncio.gather(*writers)
                process = start_server(tmp_path, port)
                await wait_serving_async(channel, READY_S, process=process)
                assert await verify(stub, acked, next(markers)) > PRODUCTS
            assert sum(len(v) for v in acked.values()) > ITERATIONS   # writes were acknowledged between kills
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
