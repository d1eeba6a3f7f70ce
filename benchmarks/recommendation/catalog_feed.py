"""FollowCatalog through a real recommendation server on loopback: catch-up rate and live latency.

    .venv/bin/python -m benchmarks.recommendation.catalog_feed --products 50000 --updates 300

1. `--products` products are upserted (one change each), then stock moves for all of them (a second
   change each); a follower opened at 0 reads every change: changes per second while catching up.
2. Live: `--updates` single UpdateInventory calls, one at a time, each timed from the call to the
   follower receiving its change (the commit, the wake-up and the stream hop; no polling).
Bounded in products, updates and time; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from services.common.server import build_server
from services.recommendation.app import build_service
from services.recommendation.config import RecommendationConfig
from vitrine.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc

TIMEOUT = 300.0


def ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


async def run(products: int, updates: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        config = RecommendationConfig(port=0, data_dir=str(Path(tmp)), snapshot_seconds=0, follow_events=False,
                                      log_level="WARNING")
        running = await build_server(config, build_service(config))
        try:
            return await _measure(running.address, products, updates)
        finally:
            await running.stop(0)


async def _measure(address: str, products: int, updates: int) -> dict[str, object]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        await stub.UpsertProducts(iter([common_pb2.Product(product_id=f"p{i}", price=10.0, stock=1)
                                        for i in range(products)]), timeout=TIMEOUT)
        await stub.UpdateInventory(iter([recommend_pb2.StockUpdate(product_id=f"p{i}", stock=0)
                                         for i in range(products)]), timeout=TIMEOUT)
        total = 2 * products
        call = stub.FollowCatalog(recommend_pb2.FollowCatalogRequest(from_seq=0))
        started = time.perf_counter()
        changes = aiter(call)           # read as the shared follower reads (no read() per item)
        async with asyncio.timeout(TIMEOUT):
            async for change in changes:
                if change.seq == total:
                    break
        catch_up = time.perf_counter() - started
        assert change.seq == total
        live = []
        for i in range(updates):
            t0 = time.perf_counter()
            await stub.UpdateInventory(iter([recommend_pb2.StockUpdate(product_id="p0", stock=i + 1)]),
                                       timeout=10)
            change = await asyncio.wait_for(anext(changes), 10)
            live.append(time.perf_counter() - t0)
            assert change.stock == i + 1
        call.cancel()
    return {"changes": total, "catch_up_seconds": round(catch_up, 3),
        "catch_up_changes_per_second": round(total / catch_up), "live_update_to_follower": ms(live),
        "updates": updates, "load_average": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.products, args.updates)), indent=1))


if __name__ == "__main__":
    main()
