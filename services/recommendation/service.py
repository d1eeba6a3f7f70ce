"""The recommendation service object: lifecycle (store, model, warm-up, snapshots) and the
domain operations the servicer calls (upsert, inventory, observe, train, recommend)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scoring import rerank as rr
from scoring.index import IndexParams
from scoring.session_knn import build_neighbours, session_scores
from services.common.channel import channel_for
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    VitrineError,
)
from services.common.tasks import cancel_and_wait
from services.recommendation.catalog import (
    Catalog,
    StockChange,
    product_error,
    product_id_error,
    stock_change_error,
)
from services.recommendation.changes import ChangeFeed, follow
from services.recommendation.config import (
    CREATED_PRODUCT_STOCK,
    MAX_BATCH_REQUESTS,
    MAX_DIMENSIONS,
    MAX_SUMMARY_ERRORS,
    MAX_TRAIN_SESSIONS,
    MIN_DIMENSIONS,
    MODELS_KEPT,
    SCAN_TIMEOUT_SECONDS,
    SERVICE,
    STREAM_BATCH,
    TRENDING_REFRESH_MS,
    RecommendationConfig,
)
from services.recommendation.engine import Query, Recommender, Result
from services.recommendation.feed import EventSignals, ObserveResult, SignalFeeds
from services.recommendation.model import Model, ModelStore, assemble, new_version
from services.recommendation.query import RankQuery
from services.recommendation.rank import ListRanker
from services.recommendation.ranker import LearnedScorer
from services.recommendation.ranker_model import train_ranker
from services.recommendation.second_stage import warm_up_ranker
from services.recommendation.signals import SNAPSHOT_FILE, Signals
from services.recommendation.store import SignalStore
from services.recommendation.training import SESSION_EVENT_TYPES, Trained, sessions_from_events, train_model
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc, recommend_pb2

log = logging.getLogger(__name__)


class _Internal(VitrineError):
    code_name = "INTERNAL"


@dataclass
class Summary:
    upserted: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, where: str, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_SUMMARY_ERRORS:
            self.errors.append(f"{where}: {why}")


@dataclass(frozen=True)
class TrainSpec:
    sessions: Sequence[Sequence[str]] = ()
    dimensions: int = 0
    from_event_log: bool = False
    since_ms: int = 0
    create_missing_products: bool = False


@dataclass(frozen=True)
class TrainOutcome:
    model_version: str
    items: int
    interactions: int
    index_type: str
    train_seconds: float
    index_seconds: float
    products_created: int
    recall_at_10: float


async def _batches(stream: AsyncIterable[Any], size: int) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async for item in stream:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class RecommendationService:
    name = SERVICE
    service_names: Sequence[str] = ("vitrine.v1.RecommendService",)

    def __init__(self, config: RecommendationConfig) -> None:
        self.config = config
        self.directory = Path(config.data_dir) / SERVICE
        self.catalog = Catalog(self.directory)
        self.catalog_feed = ChangeFeed()
        self.signals = Signals(config.trending_half_life_hours * 3_600_000)
        self.event_signals = EventSignals(self.catalog, self.signals)
        self.signal_store: SignalStore | None = None
        self.feeds: SignalFeeds | None = None
        self._save_lock = asyncio.Lock()
        self._observe_warned = False
        self.models = ModelStore(self.directory / "models")
        self.recommender = Recommender(self.catalog, self.signals, candidate_multiplier=config.candidate_multiplier,
                                       budget_tolerance=config.budget_tolerance)
        # Rank; its `scorer` is the pluggable stage: the learned ranker when the model has one
        self.list_ranker = ListRanker(self.recommender, LearnedScorer())
        self.index_params = IndexParams(flat_max_items=config.flat_index_max_items, kind=config.index_kind,
                                        nlist=config.ivf_nlist, hnsw_m=config.hnsw_m,
                                        ef_construction=config.hnsw_ef_construction,
                                        ef_search=config.hnsw_ef_search, target_recall=config.target_recall)
        self._write_lock = asyncio.Lock()
        self._train_lock = asyncio.Lock()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._snapshot_task: asyncio.Task[None] | None = None
        self._trending_task: asyncio.Task[None] | None = None
        self._model_task: asyncio.Task[None] | None = None

    # -- lifecycle (app.RecommendationApp binds the servicer, as every service's app.py does) ------
    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "models").mkdir(exist_ok=True)
        await asyncio.to_thread(self.catalog.open)
        assert self.catalog.changes is not None
        self.catalog_feed.last_seq = (await asyncio.to_thread(self.catalog.changes.bounds))[1]
        await self._load_signals()
        self.signals.rebuild_categories(self.catalog.category)
        version = self.models.current_version()
        if version:
            self.recommender.model = await asyncio.to_thread(
                self.models.load, version, self.catalog.row_of, len(self.catalog))
        warm_up()
        if self.config.snapshot_seconds > 0:
            self._snapshot_task = asyncio.create_task(self._every(
                self.config.snapshot_seconds, self.save_signals, "saving the signals snapshot failed"))
        self._trending_task = asyncio.create_task(self._every(
            TRENDING_REFRESH_MS / 1000, self.refresh_trending, "refreshing the trending pool failed"))
        if self.config.model_poll_seconds > 0:
            # Replicas sharing a model volume with a trainer (Kubernetes) pick up a new version, or
            # a rollback, without a restart.
            self._model_task = asyncio.create_task(self._every(
                self.config.model_poll_seconds, self.follow_current_model,
                "loading the model named by models/current failed; keeping the one in use"))
        self.start_feeds()
        log.info("recommendation ready: %d products, model %s", len(self.catalog), version or "none",
                 extra={"fields": {"products": len(self.catalog), "model_version": version or ""}})

    async def stop(self) -> None:
        if self.feeds is not None:
            await self.feeds.stop()
            self.feeds = None
        for task in (self._snapshot_task, self._trending_task, self._model_task):
            await cancel_and_wait(task)
        if self.catalog.env is not None:
            await self.save_signals()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        async with self._write_lock:  # a commit still running (shielded from its caller) finishes first
            self.catalog.close()

    async def _load_signals(self) -> None:
        """The saved signals and feed cursors (or, once, a snapshot file from before they moved into LMDB)."""
        assert self.catalog.env is not None
        self.signal_store = SignalStore(self.catalog.env)
        blob, cursors = await asyncio.to_thread(self.signal_store.load)
        legacy = self.directory / SNAPSHOT_FILE
        counted_before_ms = 0
        if blob is not None:
            await asyncio.to_thread(self.signals.restore, blob, self.catalog.row_of)
        elif legacy.exists():   # Observe counted what it holds: the first replay skips events before it
            await asyncio.to_thread(self.signals.restore, legacy, self.catalog.row_of)
            counted_before_ms = int(legacy.stat().st_mtime * 1000)
        self.event_signals.resume(cursors, counted_before_ms)

    def start_feeds(self) -> None:
        """Follow every profile shard's event log (the real-time signals' source)."""
        addresses = [a.strip() for a in self.config.profile_addresses.split(",") if a.strip()]
        if self.config.follow_events and addresses and self.feeds is None:
            self.feeds = SignalFeeds(self.event_signals, addresses, self.config, self.save_signals)
            self.feeds.start()

    async def save_signals(self) -> None:
        """The signals and the feed cursors they have consumed, in one LMDB transaction. Shielded: a
        periodic save cancelled at stop still finishes (holding the lock) before stop saves and closes."""
        await asyncio.shield(self._save_signals())

    async def _save_signals(self) -> None:
        assert self.signal_store is not None
        async with self._save_lock:
            ids = list(self.catalog.ids)
            snap = self.signals.snapshot(ids)          # state and cursors copied at the same instant
            cursors = dict(self.event_signals.cursors)
            blob = await asyncio.to_thread(Signals.encode, snap, ids)
            await asyncio.to_thread(self.signal_store.save, blob, cursors)

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[object]], failure: str) -> None:
        """Run `action` every `seconds` until cancelled; a failure is logged and the loop goes on."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:
                log.exception(failure)

    async def refresh_trending(self) -> None:
        """Keep the trending pool fresh off the request path (ranking 1M counts takes ~10 ms)."""
        if self.recommender.trending_is_stale():
            self.recommender.set_trending(await asyncio.to_thread(self.recommender.compute_trending))

    async def follow_current_model(self) -> bool:
        """Load and swap in the version `models/current` names if it is not the one in use."""
        if self._train_lock.locked():  # this process is the writer of `current`: Train swaps it itself
            return False
        version = await asyncio.to_thread(self.models.current_version)
        in_use = self.recommender.model
        if not version or (in_use is not None and in_use.version == version):
            return False
        started = time.perf_counter()
        model = await asyncio.to_thread(self.models.load, version, self.catalog.row_of, len(self.catalog))
        if self._train_lock.locked() or self.recommender.model is not in_use:
            return False  # a Train started meanwhile; it decides
        self.recommender.model = model
        log.info("model %s in use (from models/current), loaded in %.1fs", version, time.perf_counter() - started,
                 extra={"fields": {"model_version": version, "previous": in_use.version if in_use else ""}})
        return True

    # -- catalog -----------------------------------------------------------------------------
    async def upsert(self, products: AsyncIterable[common_pb2.Product]) -> Summary:
        return await self._ingest(products, "product", product_error, self.catalog.write, self.catalog.apply)

    async def update_inventory(self, changes: AsyncIterable[StockChange]) -> Summary:
        def problem_of(change: StockChange) -> str | None:
            problem = stock_change_error(change)
            if problem is None and change.product_id not in self.catalog.row_of:
                problem = "unknown product; upsert it first"
            return problem

        return await self._ingest(changes, "update", problem_of, self.catalog.write_stock, self.catalog.apply_stock)

    async def _ingest(self, items: AsyncIterable[Any], label: str, problem_of: Callable[[Any], str | None],
                      write: Callable[[list[Any]], list[recommend_pb2.CatalogChange]],
                      apply: Callable[[list[Any]], None]) -> Summary:
        """Validate a stream in batches; bad items are rejected one by one with their reason, the
        good ones of each batch are persisted (off the event loop) and then applied to the columns."""
        summary = Summary()
        seen = 0
        async for batch in _batches(items, STREAM_BATCH):
            good = []
            for item in batch:
                problem = problem_of(item)
                if problem:
                    summary.reject(f"{label} {seen} ({item.product_id[:64]!r})", problem)
                else:
                    good.append(item)
                seen += 1
            if good:
                # shielded: a caller that goes away mid-commit must not leave the columns and the
                # catalog feed behind what LMDB committed
                await asyncio.shield(self._commit(good, write, apply))
                summary.upserted += len(good)
        return summary

    async def _commit(self, items: list[Any], write: Callable[[list[Any]], list[recommend_pb2.CatalogChange]],
                      apply: Callable[[list[Any]], None]) -> None:
        async with self._write_lock:
            logged = await asyncio.to_thread(write, items)
            apply(items)
            if logged:
                await self.catalog_feed.published(logged[-1].seq)

    def follow_catalog(self, from_seq: int) -> AsyncIterator[recommend_pb2.CatalogChange]:
        """The catalog-change feed from `from_seq` (see `changes.follow`)."""
        assert self.catalog.changes is not None
        return follow(self.catalog.changes, self.catalog_feed, from_seq)

    def get_product(self, product_id: str) -> common_pb2.Product:
        problem = product_id_error(product_id)
        if problem:
            raise InvalidArgument(problem)
        product = self.catalog.get(product_id)
        if product is None:
            raise NotFound(f"unknown product_id {product_id!r}")
        return product

    # -- signals -----------------------------------------------------------------------------
    async def observe(self, events: AsyncIterable[common_pb2.Event]) -> ObserveResult:
        """Observe (deprecated: the signals follow FollowEvents; kept while the gateway still sends).
        An event that arrives both ways counts once (the signals remember recent event ids)."""
        if not self._observe_warned:
            self._observe_warned = True
            log.warning("Observe is deprecated: the signals follow the profile shards' FollowEvents%s",
                        "" if self.feeds is not None else " (follow_events is off here: Observe feeds them)")
        result = ObserveResult()
        seen = 0
        async for batch in _batches(events, STREAM_BATCH):
            self.event_signals.observe(batch, result, seen, feed_live=self.feeds is not None and self.feeds.live)
            seen += len(batch)
        return result

    # -- recommend ---------------------------------------------------------------------------
    def recommend(self, query: Query) -> Result:
        return self.recommender.recommend(query)

    def rank(self, query: RankQuery) -> Result:
        return self.list_ranker.rank(query)

    def recommend_many(self, queries: Sequence[Query | RankQuery],
                       expired: Callable[[], bool] | None = None) -> list[Result | VitrineError]:
        """Each query (Recommend or Rank) answered on its own: a failing one yields its error, the others their results.
        Unexpected errors are logged and reported as INTERNAL for that query only. Once `expired()`
        says the caller's deadline has passed, the rest are DEADLINE_EXCEEDED without being computed
        (under overload, work nobody waits for would only delay the requests behind it)."""
        if len(queries) > MAX_BATCH_REQUESTS:
            raise InvalidArgument(f"a batch holds at most {MAX_BATCH_REQUESTS} requests, got {len(queries)}; "
                                  "split it")
        out: list[Result | VitrineError] = []
        for query in queries:
            if expired is not None and expired():
                out.append(DeadlineExceeded("the caller's deadline passed before this request was served"))
                continue
            try:
                out.append(self.recommender.recommend(query) if isinstance(query, Query)
                           else self.list_ranker.rank(query))
            except VitrineError as err:
                out.append(err)
            except Exception:
                log.exception("unhandled error in a batched Recommend")
                out.append(_Internal("internal error in a batched Recommend; see server logs"))
        return out

    @property
    def model(self) -> Model | None:
        return self.recommender.model

    # -- train -------------------------------------------------------------------------------
    async def train(self, spec: TrainSpec) -> TrainOutcome:
        if self._train_lock.locked():
            raise FailedPrecondition("a Train is already running; wait for it to finish and retry")
        async with self._train_lock:
            return await self._train(spec)

    async def _train(self, spec: TrainSpec) -> TrainOutcome:
        dim = spec.dimensions or self.config.dimensions
        if not MIN_DIMENSIONS <= dim <= MAX_DIMENSIONS:
            raise InvalidArgument(f"dimensions must be between {MIN_DIMENSIONS} and {MAX_DIMENSIONS}, got {dim}")
        if spec.from_event_log and spec.sessions:
            raise InvalidArgument("give sessions inline or set from_event_log, not both")
        if len(spec.sessions) > MAX_TRAIN_SESSIONS:
            raise InvalidArgument(f"at most {MAX_TRAIN_SESSIONS} sessions per Train")
        if spec.since_ms < 0:  # checked here: the profile shards would refuse it mid-scan
            raise InvalidArgument(f"since_ms must be >= 0 (0 = the whole log), got {spec.since_ms}")
        if spec.from_event_log:
            sessions = await self._sessions_from_event_log(spec.since_ms)
        else:
            sessions = [list(s) for s in spec.sessions]
            for i, session in enumerate(sessions):
                for j, product_id in enumerate(session):
                    problem = product_id_error(product_id)
                    if problem:
                        raise InvalidArgument(f"sessions[{i}].product_ids[{j}]: {problem}")
        known = self.catalog.row_of
        usable = sum(1 for sess in sessions
                     if len({p for p in sess if spec.create_missing_products or p in known}) >= 2)
        embeddings = await asyncio.to_thread(self.catalog.embeddings, dim)
        if not usable and not embeddings:
            raise FailedPrecondition(
                "nothing to learn from: no session has two known products and no product has an embedding "
                f"of {dim} dimensions (upsert the products first or set create_missing_products)")
        created = 0
        if spec.create_missing_products:
            missing = sorted({p for sess in sessions for p in sess if p not in known})
            if missing:
                products = [common_pb2.Product(product_id=p, stock=CREATED_PRODUCT_STOCK) for p in missing]
                await asyncio.shield(self._commit(products, self.catalog.write, self.catalog.apply))
                created = len(products)
        row_of = self.catalog.row_of
        rows = [np.fromiter((row_of.get(p, -1) for p in sess), np.int64, len(sess)) for sess in sessions]
        rows = [r[r >= 0] for r in rows]
        ids = list(self.catalog.ids)
        started = time.perf_counter()
        trained: Trained = await asyncio.to_thread(
            train_model, rows, ids, embeddings, dim=dim, index_params=self.index_params, progress=_log_progress)
        if not trained.vectors.shape[0]:
            raise FailedPrecondition("training produced no item vectors (sessions too short or too few)")
        params = self.recommender.for_you
        ranker = (await asyncio.to_thread(
            train_ranker, rows, len(ids), repeat_weight=trained.repeat_weight, recency_decay=params.recency_decay,
            purchase_weight=params.purchase_weight, category=self.catalog.category[: len(ids)].astype(np.int64))
            if trained.neighbours is not None else None)
        version = new_version()
        meta = {"model_version": version, "items": int(trained.vectors.shape[0]), "dimensions": dim,
                "interactions": trained.interactions, "index_type": trained.index.kind,
                "ef_search": trained.index.ef_search, "nprobe": trained.index.nprobe,
                "recall_at_10": trained.index.recall,
                "learned_items": trained.learned, "provided_items": trained.provided,
                "train_seconds": trained.train_seconds, "index_seconds": trained.index_seconds,
                "trained_ms": int(time.time() * 1000), "repeat_weight": trained.repeat_weight,
                "ranker": ranker.meta if ranker is not None else None}
        await asyncio.to_thread(self.models.save, version, np.asarray(trained.ids), trained.vectors,
                                trained.index, meta, trained.neighbours, ids)
        if ranker is not None:  # beside the model, before `current` names it
            await asyncio.to_thread(ranker.save, self.models.directory / version, ids)
        model = await asyncio.to_thread(assemble, version, np.asarray(trained.ids), trained.vectors, trained.index,
                                        row_of, len(self.catalog), meta, trained.neighbours)
        model = replace(model, ranker=ranker)
        await asyncio.to_thread(self.models.set_current, version)
        self.recommender.model = model  # the swap: requests holding the old model finish with it
        await asyncio.to_thread(self.models.prune, MODELS_KEPT)
        log.info("model %s in use: %d items, %s index (recall@10 %.3f), %.1fs", version, model.items,
                 trained.index.kind, trained.index.recall, time.perf_counter() - started,
                 extra={"fields": meta})
        return TrainOutcome(version, model.items, trained.interactions, trained.index.kind, trained.train_seconds,
                            trained.index_seconds, created, trained.index.recall)

    async def _sessions_from_event_log(self, since_ms: int) -> list[list[str]]:
        addresses = [a.strip() for a in self.config.profile_addresses.split(",") if a.strip()]
        if not addresses:
            raise FailedPrecondition("no profile_addresses configured; give sessions inline")
        request = profile_pb2.ScanEventsRequest(since_ms=since_ms, types=list(SESSION_EVENT_TYPES))
        events: list[common_pb2.Event] = []
        for address in addresses:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = channel_for(address, self.config)
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            try:
                async for event in stub.ScanEvents(request, timeout=SCAN_TIMEOUT_SECONDS):
                    events.append(event)
            except grpc.aio.AioRpcError as err:
                raise Unavailable(f"reading events from profile shard {address} failed: "
                                  f"{err.code().name} {err.details()}") from err
        return await asyncio.to_thread(sessions_from_events, events)

    def model_info(self) -> dict[str, Any]:
        model = self.recommender.model
        stock = self.catalog.stock
        info: dict[str, Any] = {"products": len(self.catalog), "in_stock": int((stock > 0).sum())}
        if model is not None:
            info.update(model_version=model.version, items=model.items, dimensions=model.dim,
                        index_type=model.index.kind, trained_ms=int(model.meta.get("trained_ms", 0)),
                        recall_at_10=model.index.recall, ef_search=model.index.ef_search)
        return info


def _log_progress(stage: str, fraction: float) -> None:
    log.info("train %s %.0f%%", stage, 100 * fraction, extra={"fields": {"stage": stage, "fraction": fraction}})


def warm_up() -> None:
    """Run every Numba kernel of the request path once, so the first request does not pay for
    compiling or loading it (on a fresh machine that takes seconds: readiness means compiled)."""
    table = build_neighbours([np.array([0, 1, 2]), np.array([1, 2, 0])], 3)
    session_scores(table, np.array([0, 1], np.int64))
    warm_up_ranker(table)
    stock = np.ones(4, np.int32)
    price = np.arange(4, dtype=np.float64)
    category = np.array([0, 1, 0, -1], np.int32)
    rr.rerank(np.arange(4), np.ones(4, np.float32), stock=stock, price=price, category=category, k=2,
              excluded=np.array([1]), include_categories=np.array([0, 1]), exclude_categories=np.array([3]),
              category_boost=np.ones(2, np.float32), budget=1.0, max_per_category=1, n_categories=2)
