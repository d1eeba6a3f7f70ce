"""Rank latency in-process, against FOR_YOU in the same run (the baseline).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.recommendation.rank_latency --items 40000 --requests 2000

A synthetic catalog of `--items` products with clustered item vectors (benchmarks.recommendation.latency),
the service's index choice, and a session-neighbour table from synthetic sessions, so both signals of
Rank's first stage are live. Then, one at a time through the service's own objects (no gRPC): FOR_YOU
k=20 and Rank of a 100-id list (k=20, and k=0 = every qualifying item), each shopper with 5 recent
views and a budget. Wall-clock and CPU time of the requesting thread (CPU is what a request costs
without the preemption of a shared machine). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks.recommendation.latency import item_vectors, percentiles, say, synthetic_catalog
from scoring.index import IndexParams, build_index
from scoring.session_knn import build_neighbours
from services.recommendation.engine import Query, Recommender, Shopper
from services.recommendation.model import assemble
from services.recommendation.query import RankQuery
from services.recommendation.rank import ListRanker
from services.recommendation.signals import Signals


def timed(requests: list[object], call: Callable[[object], object]) -> dict[str, dict[str, float]]:
    wall, cpu = [], []
    for request in requests:
        c0, t0 = time.thread_time(), time.perf_counter()
        call(request)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {"wall": percentiles(wall), "cpu": percentiles(cpu)}


def bench_recommender(n: int, dim: int, sessions: Sequence[np.ndarray]) -> tuple[Recommender, str]:
    """The service's Recommender over a synthetic catalog of `n` products (clustered vectors, the
    service's index choice, the session-neighbour table of `sessions`), and the index kind."""
    x = item_vectors(n, dim)
    index = build_index(x, IndexParams())
    catalog = synthetic_catalog(n)
    neighbours = build_neighbours(sessions, n)
    recommender = Recommender(catalog, Signals(24 * 3_600_000))
    recommender.model = assemble("bench", np.asarray(catalog.ids), x, index, catalog.row_of, n, {}, neighbours)
    return recommender, index.kind


def run(n: int, requests: int, list_size: int, dim: int = 64) -> dict[str, object]:
    rng = np.random.default_rng(3)
    say(f"{n:,} items x {dim}: vectors, index, session table")
    sessions = [rng.integers(0, n, int(rng.integers(3, 10))) for _ in range(n // 2)]
    recommender, index_kind = bench_recommender(n, dim, sessions)
    ranker = ListRanker(recommender)
    shoppers = [Shopper(recent=tuple(f"p{i}" for i in rng.integers(0, n, 5)), budget=40.0) for _ in range(requests)]
    lists = [tuple(f"p{i}" for i in rng.choice(n, list_size, replace=False)) for _ in range(requests)]
    for_you = [Query("FOR_YOU", 20, shopper=s) for s in shoppers]
    rank_20 = [RankQuery(lst, 20, shopper=s) for lst, s in zip(lists, shoppers, strict=True)]
    rank_all = [RankQuery(lst, 0, shopper=s) for lst, s in zip(lists, shoppers, strict=True)]
    for q in for_you[:20]:                       # compile and warm the kernels
        recommender.recommend(q)
    for rq in rank_20[:20]:
        ranker.rank(rq)
    out: dict[str, object] = {"items": n, "requests": requests, "list_size": list_size, "index": index_kind}
    say(f"{requests} FOR_YOU, then {requests} Rank k=20 and k=0, one at a time")
    out["for_you_k20"] = timed(for_you, recommender.recommend)  # type: ignore[arg-type]
    out["rank_k20"] = timed(rank_20, ranker.rank)  # type: ignore[arg-type]
    out["rank_all"] = timed(rank_all, ranker.rank)  # type: ignore[arg-type]
    base = out["for_you_k20"]["cpu"]["p50_ms"]  # type: ignore[index]
    out["rank_k20_cpu_p50_vs_for_you"] = round(out["rank_k20"]["cpu"]["p50_ms"] / base, 2)  # type: ignore[index]
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return out


def latency_cli(run: Callable[[int, int, int], dict[str, object]], doc: str | None) -> None:
    """The command line of the Rank latency benchmarks (this one and benchmarks.evaluation.ranker_latency):
    the same catalog size, request count and list size, the run's figures printed as JSON."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--list-size", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(run(args.items, args.requests, args.list_size), indent=1))


def main() -> None:
    latency_cli(run, __doc__)


if __name__ == "__main__":
    main()
