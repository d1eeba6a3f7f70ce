"""FOR_YOU and Rank latency with the learned second stage, in-process, against the first stage alone in
the same run (the baseline).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.evaluation.ranker_latency --items 40000 --requests 2000

The harness of benchmarks.recommendation.rank_latency (a synthetic catalog of `--items` products with
clustered vectors, the service's index choice, a session-neighbour table) with sessions that walk
near their start so the neighbours mean something, and a LightGBM ranker trained on them by
`train_ranker` (what Train does). One request at a time through the service's objects (no gRPC):
FOR_YOU k=20 with and without the second stage, Rank of a 100-id list (k=20) with the learned and
the first-stage scorer; shoppers with 5 recent views and a budget. CPU time of the requesting thread
is the figure to read on a shared machine (wall clock includes preemption). Prints JSON.
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks.recommendation.latency import say
from benchmarks.recommendation.rank_latency import bench_recommender, latency_cli, timed
from services.recommendation.engine import Query, Shopper
from services.recommendation.query import RankQuery
from services.recommendation.rank import FirstStageScorer, ListRanker
from services.recommendation.ranker import LearnedScorer
from services.recommendation.ranker_model import train_ranker

BENCH_TREES = 60


def run(n: int, requests: int, list_size: int, dim: int = 64) -> dict[str, object]:
    rng = np.random.default_rng(3)
    say(f"{n:,} items x {dim}: vectors, index, session table, ranker")
    sessions = []
    for _ in range(n):
        start = int(rng.integers(0, n))
        sessions.append((start + rng.integers(-20, 21, int(rng.integers(3, 10)))) % n)
    recommender, index_kind = bench_recommender(n, dim, sessions)
    params = recommender.for_you
    # a fixed 60 trees, more than early stopping kept on Tmall (5-51 across runs), so predict is not flattered
    learned = train_ranker(sessions, n, repeat_weight=1.0, recency_decay=params.recency_decay,
                           purchase_weight=params.purchase_weight, rounds=BENCH_TREES, early_stop=0)
    assert learned is not None, "the synthetic sessions gave too few cases for a ranker"
    recommender.model = replace(recommender.model, ranker=learned)
    ranker = ListRanker(recommender, LearnedScorer())
    first = ListRanker(recommender, FirstStageScorer())
    shoppers = []
    for _ in range(requests):
        s = sessions[int(rng.integers(len(sessions)))]
        shoppers.append(Shopper(recent=tuple(f"p{i}" for i in s[:5][::-1]), budget=40.0))
    lists = [tuple(f"p{i}" for i in rng.choice(n, list_size, replace=False)) for _ in range(requests)]
    for_you = [Query("FOR_YOU", 20, shopper=s) for s in shoppers]
    rank_20 = [RankQuery(lst, 20, shopper=s) for lst, s in zip(lists, shoppers, strict=True)]
    for q in for_you[:20]:
        recommender.recommend(q)
    for rq in rank_20[:20]:
        ranker.rank(rq)
        first.rank(rq)
    out: dict[str, object] = {"items": n, "requests": requests, "list_size": list_size, "index": index_kind,
                              "ranker": learned.meta}
    say(f"{requests} requests each: FOR_YOU with/without the ranker, Rank learned/first stage")
    params.second_stage = False
    out["for_you_first_stage"] = timed(for_you, recommender.recommend)  # type: ignore[arg-type]
    params.second_stage = True
    out["for_you_ranker"] = timed(for_you, recommender.recommend)  # type: ignore[arg-type]
    out["rank_first_stage"] = timed(rank_20, first.rank)  # type: ignore[arg-type]
    out["rank_ranker"] = timed(rank_20, ranker.rank)  # type: ignore[arg-type]
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return out


def main() -> None:
    latency_cli(run, __doc__)


if __name__ == "__main__":
    main()
