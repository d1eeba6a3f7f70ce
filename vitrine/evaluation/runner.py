"""Offline evaluation through the REAL recommendation service, in-process, over a real channel.

`evaluate(dataset)`:
1. starts `services.recommendation.app.build_service(config)` with
   `services.common.server.build_server` on port 0 and a temporary data directory;
2. trains it with the `Train` RPC, sessions inline, `create_missing_products=true`;
3. `Observe`s the training clicks as PRODUCT_VIEW events (the popularity signal behind TRENDING);
4. for each test case and strategy, calls `Recommend(k)` concurrently (bounded), with
   `user.recent_product_ids` = the prefix NEWEST FIRST and `include_out_of_stock=true`;
   SIMILAR uses the newest prefix item as the anchor;
5. computes HR/MRR/NDCG@10/20 and coverage@20 per strategy (`metrics.score_lists`), over all cases
   and over the cases whose next item is not a re-view (not in the prefix).

Pseudo-strategies beside the real ones: FOR_YOU_FIRST_STAGE is FOR_YOU with the learned second stage
switched off (`ForYouParams.second_stage`) on the same model; RANK is the Rank protocol
(`rank_protocol.py`: the true next item among RANK_CANDIDATES sampled by popularity, where it lands);
RANK_FIRST_STAGE the same with the first-stage scorer.

Nothing here re-implements the service: what is measured is what the RPC returns.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from vitrine.evaluation.datasets import Dataset, category_affinity
from vitrine.evaluation.metrics import Scores, score_lists
from vitrine.evaluation.rank_protocol import run_rank_protocol

log = logging.getLogger(__name__)

K = 20
DEFAULT_STRATEGIES = ("FOR_YOU", "TRENDING", "SIMILAR", "RECENTLY_VIEWED")
DEFAULT_CONCURRENCY = 16          # Recommend calls in flight
MAX_RECENT = 200                  # the service's MAX_RECENT_IDS: longer prefixes keep their newest
TRAIN_TIMEOUT_S = 3_600.0
OBSERVE_TIMEOUT_S = 600.0
RECOMMEND_TIMEOUT_S = 30.0
OBSERVE_BATCH = 20_000            # events per Observe stream
TRAIN_MAX_MB = 256                # message size the evaluation's own service accepts

Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    """One status line on stderr, rewritten in place; a message ending in a newline stays."""
    end = "\n" if message.endswith("\n") else ""
    sys.stderr.write(f"\r{message.rstrip(chr(10)):<78}{end}")
    sys.stderr.flush()


@dataclass
class Report:
    dataset: str
    cases: int
    train_sessions: int
    catalog_items: int
    scores: dict[str, Scores]
    fallback_share: dict[str, float]
    seconds: dict[str, float]
    model: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scores_new: dict[str, Scores] = field(default_factory=dict)   # cases whose next item is not a re-view


def _observe_events(sessions: Sequence[Sequence[str]], now_ms: int) -> Iterator[Any]:
    from vitrine.v1 import common_pb2

    total = sum(len(s) for s in sessions)
    n = 0
    for i, session in enumerate(sessions):
        for j, product_id in enumerate(session):
            # spread over the last hour, oldest first, so decay hardly matters
            ts = now_ms - 3_600_000 + (3_600_000 * n) // max(total, 1)
            yield common_pb2.Event(event_id=f"eval-{i}-{j}", user_id=f"eval-{i}", session_id=f"eval-{i}",
                                   type=common_pb2.PRODUCT_VIEW, timestamp_ms=ts, product_id=product_id)
            n += 1


def _request(strategy: str, prefix: Sequence[str], k: int, affinity: dict[str, float] | None = None) -> Any:
    from vitrine.v1 import recommend_pb2

    recent = list(reversed(prefix))[:MAX_RECENT]
    req = recommend_pb2.RecommendRequest(strategy=recommend_pb2.Strategy.Value(strategy), k=k)
    req.constraints.include_out_of_stock = True
    if strategy == "SIMILAR":
        req.product_id = recent[0] if recent else ""
    else:
        req.user.recent_product_ids.extend(recent)
        if affinity:
            req.user.category_affinity.update(affinity)
    return req


async def _run_strategy(stub: Any, strategy: str, dataset: Dataset, k: int, concurrency: int,
                        progress: Progress, affinity_decay: float | None) -> tuple[list[list[str]], float]:
    lists: list[list[str]] = [[] for _ in dataset.test]
    fallbacks = 0
    done = 0
    total = len(dataset.test)
    sem = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal fallbacks, done
        prefix = dataset.test[i].prefix
        affinity = (category_affinity(prefix, dataset.categories, decay=affinity_decay)
                    if affinity_decay is not None and dataset.categories else None)
        req = _request(strategy, prefix, k, affinity)
        async with sem:
            try:
                resp = await stub.Recommend(req, timeout=RECOMMEND_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    raise
                resp = None  # e.g. SIMILAR on an anchor the service does not know: an empty list
        if resp is not None:
            lists[i] = [item.product_id for item in resp.items]
            fallbacks += bool(resp.fallback)
        done += 1
        if done % 500 == 0 or done == total:
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress(f"{strategy}: {done:,}/{total:,} cases, {rate:,.0f}/s")

    # bounded fan-out: at most a few thousand tasks alive at once
    chunk = max(concurrency * 64, 1)
    for lo in range(0, total, chunk):
        await asyncio.gather(*(one(i) for i in range(lo, min(total, lo + chunk))))
    return lists, fallbacks / max(total, 1)


async def evaluate_async(dataset: Dataset, *, strategies: Sequence[str] = DEFAULT_STRATEGIES, k: int = K,
                         concurrency: int = DEFAULT_CONCURRENCY, dimensions: int = 0,
                         for_you: dict[str, Any] | None = None, observe: bool = True,
                         affinity_decay: float | None = None, progress: Progress | None = None) -> Report:
    """Run the whole evaluation against a fresh in-process recommendation service.

    `for_you` optionally overrides fields of the service's `ForYouParams` (the tunables the
    service exposes for this purpose, e.g. {"exclude_recent": False}); they are set on the
    in-process `Recommender` before any Recommend call, and reported in `Report.notes`.

    `dataset.products`, when given, are upserted before Train (real titles, categories,
    prices). `affinity_decay` (with `dataset.categories`): FOR_YOU and TRENDING requests also
    carry `user.category_affinity` computed from the prefix (`datasets.category_affinity`).
    """
    from services.common.server import build_server
    from services.recommendation.app import build_service
    from services.recommendation.config import RecommendationConfig
    from vitrine.v1 import recommend_pb2, recommend_pb2_grpc

    say = progress or _stderr_progress
    seconds: dict[str, float] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vitrine-eval-") as tmp:
        config = RecommendationConfig(port=0, data_dir=tmp, snapshot_seconds=0, max_message_mb=TRAIN_MAX_MB,
                                      log_level="WARNING", follow_events=False)  # signals from Observe only
        service = build_service(config)
        running = await build_server(config, service)
        try:
            if for_you:
                params = service.recommender.for_you
                for name, value in for_you.items():
                    if not hasattr(params, name):
                        raise ValueError(f"ForYouParams has no field {name!r}")
                    setattr(params, name, value)
                notes.append("FOR_YOU params overridden: " + ", ".join(f"{a}={b}" for a, b in for_you.items()))
            options = [("grpc.max_send_message_length", TRAIN_MAX_MB * 1024 * 1024),
                       ("grpc.max_receive_message_length", TRAIN_MAX_MB * 1024 * 1024)]
            async with grpc.aio.insecure_channel(running.address, options=options) as channel:
                stub = recommend_pb2_grpc.RecommendServiceStub(channel)
                if dataset.products:
                    t = time.perf_counter()
                    up = await stub.UpsertProducts(iter(dataset.products), timeout=OBSERVE_TIMEOUT_S)
                    seconds["upsert"] = time.perf_counter() - t
                    say(f"UpsertProducts: {up.upserted:,} products ({up.rejected} rejected)\n")
                if affinity_decay is not None and dataset.categories:
                    notes.append(f"FOR_YOU and TRENDING requests carry category_affinity from the prefix "
                                 f"(decay {affinity_decay} per view)")
                t = time.perf_counter()
                say(f"Train: {len(dataset.train):,} sessions ...")
                train_req = recommend_pb2.TrainRequest(create_missing_products=True, dimensions=dimensions)
                for s in dataset.train:
                    train_req.sessions.add().product_ids.extend(s)
                trained = await stub.Train(train_req, timeout=TRAIN_TIMEOUT_S)
                seconds["train"] = time.perf_counter() - t
                ranker = service.recommender.model.ranker if service.recommender.model else None
                model = {"model_version": trained.model_version, "items": trained.items,
                         "ranker": ranker.meta if ranker is not None else None,
                         "interactions": trained.interactions, "index_type": trained.index_type,
                         "train_seconds": round(trained.train_seconds, 1),
                         "index_seconds": round(trained.index_seconds, 1)}
                say(f"Train: {trained.items:,} item vectors in {seconds['train']:.0f}s\n")
                if observe and "TRENDING" in strategies:
                    t = time.perf_counter()
                    now = int(time.time() * 1000)
                    events = list(_observe_events(dataset.train, now))
                    observed = 0
                    for lo in range(0, len(events), OBSERVE_BATCH):
                        summary = await stub.Observe(iter(events[lo:lo + OBSERVE_BATCH]), timeout=OBSERVE_TIMEOUT_S)
                        observed += summary.observed
                        say(f"Observe: {min(lo + OBSERVE_BATCH, len(events)):,}/{len(events):,} events")
                    seconds["observe"] = time.perf_counter() - t
                    say(f"Observe: {observed:,} events in {seconds['observe']:.0f}s\n")
                scores: dict[str, Scores] = {}
                scores_new: dict[str, Scores] = {}
                fallback: dict[str, float] = {}
                targets = [c.next for c in dataset.test]
                new = [i for i, c in enumerate(dataset.test) if c.next not in c.prefix]
                n_catalog = len({p for s in dataset.train for p in s})
                for strategy in strategies:
                    t = time.perf_counter()
                    if strategy in ("RANK", "RANK_FIRST_STAGE"):
                        lists, fallback[strategy] = await run_rank_protocol(
                            stub, service, dataset, concurrency, say, first_stage=strategy == "RANK_FIRST_STAGE")
                    else:
                        first_stage = strategy == "FOR_YOU_FIRST_STAGE"
                        service.recommender.for_you.second_stage = not first_stage
                        lists, fallback[strategy] = await _run_strategy(
                            stub, "FOR_YOU" if first_stage else strategy, dataset, k, concurrency, say,
                            affinity_decay if strategy in ("FOR_YOU", "FOR_YOU_FIRST_STAGE", "TRENDING") else None)
                        service.recommender.for_you.second_stage = True
                    seconds[strategy] = time.perf_counter() - t
                    scores[strategy] = score_lists(lists, targets, n_catalog, pad="")
                    scores_new[strategy] = score_lists([lists[i] for i in new], [targets[i] for i in new],
                                                       n_catalog, pad="")
                    say(f"{strategy}: HR@20 {100 * scores[strategy].hr20:.2f}  MRR@20 "
                        f"{100 * scores[strategy].mrr20:.2f}  ({seconds[strategy]:.0f}s)\n")
        finally:
            await running.stop(0)
    return Report(dataset.name, len(dataset.test), len(dataset.train), n_catalog, scores, fallback, seconds,
                  model, notes, scores_new)


def evaluate(dataset: Dataset, **kwargs: Any) -> Report:
    """Blocking wrapper around `evaluate_async` (its own event loop)."""
    return asyncio.run(evaluate_async(dataset, **kwargs))
