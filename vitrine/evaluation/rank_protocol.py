"""The Rank protocol: how well `RecommendService.Rank` orders a caller's list for a shopper.

Each test case hands Rank RANK_CANDIDATES products: the true next item and RANK_CANDIDATES - 1 others
sampled without replacement in proportion to their training click counts (so the decoys are the
popular products a search page would show), shuffled with a seed per case. The shopper's prefix goes
as `user.recent_product_ids` (newest first). Where the true item lands gives HR/MRR/NDCG@10/20 (with
100 candidates, a random order has HR@10 = 10 %).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vitrine.evaluation.datasets import Dataset

RANK_CANDIDATES = 100
RANK_SEED = 0
RANK_TIMEOUT_S = 30.0
MAX_RECENT = 200


def candidate_lists(dataset: Dataset, n: int = RANK_CANDIDATES, seed: int = RANK_SEED) -> list[list[str]]:
    """Per test case: the true next item and n - 1 popularity-sampled others, shuffled."""
    counts = Counter(p for s in dataset.train for p in s)
    items = sorted(counts)
    weights = np.asarray([counts[p] for p in items], np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    out = []
    for case in dataset.test:
        picked = rng.choice(len(items), size=min(n + 5, len(items)), replace=False, p=weights)
        others = [items[i] for i in picked if items[i] != case.next][: n - 1]
        lst = [case.next, *others]
        rng.shuffle(lst)
        out.append(lst)
    return out


def popularity_order(dataset: Dataset, lists: Sequence[Sequence[str]]) -> list[list[str]]:
    """The baseline: each list sorted by training click count."""
    counts = Counter(p for s in dataset.train for p in s)
    return [sorted(lst, key=lambda p: -counts[p]) for lst in lists]


async def run_rank_protocol(stub: Any, service: Any, dataset: Dataset, concurrency: int,
                            progress: Callable[[str], None], *, first_stage: bool = False,
                            ) -> tuple[list[list[str]], float]:
    """Rank every case's candidate list through the service; (ranked lists, share of fallbacks).
    `first_stage`: the service's list ranker uses the first-stage scorer for this run."""
    from services.recommendation.rank import FirstStageScorer
    from vitrine.v1 import recommend_pb2

    lists = candidate_lists(dataset)
    ranker = service.list_ranker
    scorer = ranker.scorer
    if first_stage:
        ranker.scorer = FirstStageScorer()
    out: list[list[str]] = [[] for _ in lists]
    fallbacks = 0
    done = 0
    sem = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    name = "RANK_FIRST_STAGE" if first_stage else "RANK"

    async def one(i: int) -> None:
        nonlocal fallbacks, done
        req = recommend_pb2.RankRequest(product_ids=lists[i])
        req.user.recent_product_ids.extend(list(reversed(dataset.test[i].prefix))[:MAX_RECENT])
        req.constraints.include_out_of_stock = True
        async with sem:
            resp = await stub.Rank(req, timeout=RANK_TIMEOUT_S)
        out[i] = [item.product_id for item in resp.items]
        fallbacks += bool(resp.fallback)
        done += 1
        if done % 500 == 0 or done == len(lists):
            progress(f"{name}: {done:,}/{len(lists):,} cases, {done / max(time.perf_counter() - started, 1e-9):,.0f}/s")

    try:
        chunk = max(concurrency * 64, 1)
        for lo in range(0, len(lists), chunk):
            await asyncio.gather(*(one(i) for i in range(lo, min(len(lists), lo + chunk))))
    finally:
        ranker.scorer = scorer
    return out, fallbacks / max(len(lists), 1)
