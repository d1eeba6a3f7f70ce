"""Load the demo store into running Vitrine services, streaming.

Order: wait for the services to report SERVING, upsert the catalog
(RecommendService.UpsertProducts in batches), put the demo segments and offers
(SegmentService), then one pass over the generated shoppers: events go to the
profile service in TrackBatch requests (routed per user to the right shard with the
gateway's own hash when there are several; the recommendation service's signals follow
the profile log itself, FollowEvents, so nothing goes to the deprecated Observe unless
`observe=True`), the visits' product sequences are kept for training; then Identify for
the shoppers who logged in mid-history (and, at the demo scale, for those registered from
the start), while RecommendService.Train runs with
those sessions inline (it starts as soon as generation ends).

Nothing holds all events: at most CONCURRENCY batches per destination are in flight.
Every call has a timeout; gRPC itself retries a call that failed with a transient status
(the channels' retry policy, `RETRY_POLICY`; event ids make a repeated batch safe).
Progress: tqdm bars on stderr, or lines to a callback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from tqdm import tqdm

from scoring.units import DAY_MS
from services.common.channel import open_channel
from vitrine.demo.catalog import iter_product_batches
from vitrine.demo.config import DemoConfig
from vitrine.demo.sessions import ADD_TO_CART, CHECKOUT, PRODUCT_VIEW, PURCHASE, REMOVE_FROM_CART, HistoryGenerator
from vitrine.demo.shoppers import iter_shoppers, visitor_id
from vitrine.demo.store import demo_offers, demo_segments
from vitrine.health import wait_serving_async
from vitrine.v1 import (
    gateway_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "127.0.0.1:50052"
DEFAULT_SEGMENTATION = "127.0.0.1:50053"
DEFAULT_RECOMMENDATION = "127.0.0.1:50054"

EVENT_BATCH = 5_000  # events per Observe call, and per profile flush (sent as TrackBatch chunks)
TRACK_BATCH_MAX = 1_000  # events per ProfileService.TrackBatch request (the contract's limit)
PRODUCT_BATCH = 2_000  # products per UpsertProducts call
BATCH_TIMEOUT_S = 120.0  # deadline of one batch call
CALL_TIMEOUT_S = 10.0  # unary calls (PutSegment, Identify, ...)
TRAIN_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 60.0
RETRIES = 3  # attempts of one call, the first included
CONCURRENCY = 2  # batches in flight per destination
IDENTIFY_CONCURRENCY = 16
GATEWAY_TRACK_CONCURRENCY = 64
#: gRPC's own retries (the channel's service config): transient statuses only, with backoff. A
#: deadline is not retried: it bounds all attempts of a call together.
RETRY_POLICY = {"maxAttempts": RETRIES, "initialBackoff": "0.5s", "maxBackoff": "4s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]}
#: A client stream is retried only while what it sent fits gRPC's retry buffer: room for a batch.
RETRY_BUFFER_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (  # open_channel turns retries on (grpc.enable_retries)
    ("grpc.service_config", json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}]})),
    ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
    ("grpc.retry_buffer_size", 2 * CONCURRENCY * RETRY_BUFFER_BYTES),
)
#: Inline Train request size cap (the services' default message limit is 16 MiB).
TRAIN_MAX_BYTES = 12 * 1024 * 1024
#: Product views younger than this go to Observe too (trending); cart and purchase events always do.
OBSERVE_VIEW_DAYS = 3
OBSERVE_TYPES = frozenset({ADD_TO_CART, REMOVE_FROM_CART, CHECKOUT, PURCHASE})
MAX_ERRORS = 50


@dataclasses.dataclass
class LoadReport:
    now_ms: int = 0
    products: int = 0
    products_upserted: int = 0
    products_rejected: int = 0
    shoppers: int = 0
    events: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    observed: int = 0
    observe_ignored: int = 0
    identified: int = 0
    segments: int = 0
    offers: int = 0
    train_sessions: int = 0
    model_version: str = ""
    trained_items: int = 0
    trained_interactions: int = 0
    durations: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)

    def error(self, message: str) -> None:
        log.warning("demo load: %s", message)
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def summary(self) -> str:
        d = self.durations
        return (f"products {self.products_upserted:,}/{self.products:,} ({d.get('products', 0):.1f}s), "
                f"events {self.events_accepted:,} accepted, {self.events_duplicate:,} duplicate, "
                f"{self.events_rejected:,} rejected of {self.events:,} from {self.shoppers:,} shoppers "
                f"({d.get('events', 0):.1f}s), observed {self.observed:,}, identified {self.identified:,}, "
                f"segments {self.segments}, offers {self.offers}, "
                f"trained {self.model_version or '-'} on {self.train_sessions:,} sessions "
                f"({d.get('train', 0):.1f}s), {len(self.errors)} errors, total {d.get('total', 0):.1f}s")


class Progress:
    """`True`: a tqdm bar per stage on stderr. A callback: a line with counts and rate, at most
    once a second (logs, tests). None/False: quiet."""

    def __init__(self, sink: bool | Callable[[str], None] | None) -> None:
        self._bars = sink is True
        self._emit: Callable[[str], None] | None = sink if callable(sink) else None
        self._started: dict[str, float] = {}
        self._bar: dict[str, tqdm[Any]] = {}
        self._last = 0.0

    def start(self, stage: str, total: int | None = None, unit: str = "it") -> None:
        self._started[stage] = time.perf_counter()
        if self._bars:
            self._bar[stage] = tqdm(total=total, desc=f"[demo] {stage}", unit=unit, file=sys.stderr,
                                    unit_scale=True, dynamic_ncols=True)

    def finish(self, stage: str) -> None:
        bar = self._bar.pop(stage, None)
        if bar is not None:
            bar.close()

    def elapsed(self, stage: str) -> float:
        return time.perf_counter() - self._started.get(stage, time.perf_counter())

    def say(self, line: str) -> None:
        if self._bars:
            tqdm.write(f"[demo] {line}", file=sys.stderr)
        elif self._emit:
            self._emit(f"[demo] {line}")

    def tick(self, stage: str, done: int, total: int | None = None, extra: str = "", force: bool = False) -> None:
        bar = self._bar.get(stage)
        if bar is not None:
            bar.update(done - bar.n)
            if extra:
                bar.set_postfix_str(extra, refresh=force)
            return
        now = time.perf_counter()
        if not self._emit or (not force and now - self._last < 1.0):
            return
        self._last = now
        seconds = max(self.elapsed(stage), 1e-9)
        of = f"/{total:,}" if total else ""
        self.say(f"{stage}: {done:,}{of} ({done / seconds:,.0f}/s){' ' + extra if extra else ''}")


def demo_channel(address: str, auth_token: str = "") -> grpc.aio.Channel:
    """A channel whose calls gRPC retries on transient failures (`RETRY_POLICY`)."""
    return open_channel(address, auth_token=auth_token, options=CHANNEL_OPTIONS)


async def _call(what: str, call: Callable[[], Any], report: LoadReport) -> Any:
    """Await call() (the channel retried it already); a failure goes to the report, None returned."""
    try:
        return await call()
    except grpc.aio.AioRpcError as err:
        report.error(f"{what}: {err.code().name}: {err.details()}")
        return None


def shard_function(n_shards: int) -> Callable[[str], int] | None:
    """The gateway router's user -> shard function, or None when it cannot be imported."""
    if n_shards == 1:
        return lambda _user_id: 0
    try:
        from services.gateway.router import jump_hash, stable_key
    except ImportError:  # pragma: no cover - the gateway package ships with the repository
        return None
    return lambda user_id: jump_hash(stable_key(user_id), n_shards)


class _Pipe:
    """Batches to one streaming destination with at most `concurrency` calls in flight."""

    def __init__(self, name: str, send: Callable[[list[Any]], Any], batch_size: int, concurrency: int) -> None:
        self.name = name
        self._send = send
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._buffer: list[Any] = []
        self._pending: set[asyncio.Task[Any]] = set()

    async def put(self, item: Any) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self._batch_size:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        while len(self._pending) >= self._concurrency:
            _, self._pending = await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
        self._pending.add(asyncio.ensure_future(self._send(batch)))

    async def close(self) -> None:
        await self._flush()
        if self._pending:
            await asyncio.gather(*self._pending)
        self._pending = set()


async def load_demo(
    config: DemoConfig | None = None,
    *,
    profile_addresses: Sequence[str] | None = None,
    gateway_address: str | None = None,
    segmentation_address: str | None = DEFAULT_SEGMENTATION,
    recommendation_address: str | None = DEFAULT_RECOMMENDATION,
    auth_token: str = "",
    progress: bool | Callable[[str], None] | None = True,
    train: bool = True,
    observe: bool = False,
    batch_size: int = EVENT_BATCH,
    batch_timeout: float = BATCH_TIMEOUT_S,
    train_timeout: float = TRAIN_TIMEOUT_S,
    ready_timeout: float = READY_TIMEOUT_S,
    identify_registered: bool | None = None,
) -> LoadReport:
    """Generate the demo store of `config` and load it into the running services.

    Profiles: `profile_addresses` (one per shard, in shard order, routed like the gateway
    does); without them, through `gateway_address`'s Track when given, else the default
    profile port. `segmentation_address` / `recommendation_address` None skip those steps.
    Errors of single calls are collected in the report (`errors`), not raised; a service
    that never becomes ready raises TimeoutError.

    Shoppers who log in mid-history are always identified (anonymous id -> customer id).
    `identify_registered` also identifies the shoppers registered from their first event
    (their never-tracked visitor cookie -> customer id), so their profiles are `registered`;
    default: on, except for the `load` preset (one Identify call per registered shopper).
    """
    cfg = (config or DemoConfig()).resolved()
    report = LoadReport(now_ms=cfg.end_ms, products=cfg.n_products)
    prog = Progress(progress)
    t_total = time.perf_counter()
    if not profile_addresses and not gateway_address:
        profile_addresses = [DEFAULT_PROFILE]
    profile_addresses = list(profile_addresses or [])

    channels: list[grpc.aio.Channel] = []

    def channel(address: str) -> grpc.aio.Channel:
        ch = demo_channel(address, auth_token)
        channels.append(ch)
        return ch

    try:
        profile_stubs = [profile_pb2_grpc.ProfileServiceStub(channel(a)) for a in profile_addresses]
        gateway = gateway_pb2_grpc.PersonalizationServiceStub(channel(gateway_address)) if gateway_address else None
        segments = segment_pb2_grpc.SegmentServiceStub(channel(segmentation_address)) \
            if segmentation_address else None
        recommend = recommend_pb2_grpc.RecommendServiceStub(channel(recommendation_address)) \
            if recommendation_address else None

        prog.say(f"waiting for {len(channels)} service(s) to be ready")
        await asyncio.gather(*(wait_serving_async(ch, ready_timeout) for ch in channels))

        gen = HistoryGenerator(cfg)
        prog.say(f"demo store: {cfg.n_products:,} products, {cfg.n_shoppers:,} shoppers, {cfg.days} days "
                 f"ending {time.strftime('%Y-%m-%d %H:%M', time.gmtime(cfg.end_ms / 1000))} UTC, seed {cfg.seed}")
        if recommend is not None:
            await _load_products(gen, recommend, report, prog, batch_timeout)
        if segments is not None:
            await _load_segments(cfg, segments, report, prog)
        if identify_registered is None:
            identify_registered = cfg.scale != "load"
        training: list[asyncio.Future[None]] = []

        def start_training(sessions: list[list[str]]) -> None:
            # Train needs only the catalog and the sessions: it runs while the last batches and Identify go.
            if train and recommend is not None:
                training.append(asyncio.ensure_future(_train(sessions, recommend, report, prog, train_timeout)))

        try:
            identify_pairs = await _load_events(
                cfg, gen, profile_stubs, gateway, recommend if observe else None, report, prog,
                batch_size=batch_size, batch_timeout=batch_timeout, keep_sessions=train and recommend is not None,
                identify_registered=identify_registered, generated=start_training)
            if identify_pairs:
                await _identify(identify_pairs, profile_stubs, gateway, report, prog)
        finally:
            if training:
                await asyncio.gather(*training)
    finally:
        for ch in channels:
            await ch.close()
    report.durations["total"] = time.perf_counter() - t_total
    prog.say("done: " + report.summary())
    return report


def load_demo_sync(config: DemoConfig | None = None, **kwargs: Any) -> LoadReport:
    """`load_demo` for synchronous callers (no running event loop)."""
    return asyncio.run(load_demo(config, **kwargs))


async def _load_products(gen: HistoryGenerator, recommend: Any, report: LoadReport, prog: Progress,
                         call_seconds: float) -> None:
    prog.start("products", len(gen.catalog), "products")
    done = 0
    for batch in iter_product_batches(gen.catalog, PRODUCT_BATCH):
        summary = await _call(
            f"UpsertProducts (products {done}..{done + len(batch) - 1})",
            functools.partial(recommend.UpsertProducts, iter(batch), timeout=call_seconds), report)
        done += len(batch)
        if summary is not None:
            report.products_upserted += summary.upserted
            report.products_rejected += summary.rejected
            for message in list(summary.errors)[:3]:
                report.error(f"UpsertProducts: {message}")
        prog.tick("products", done, len(gen.catalog))
    report.durations["products"] = prog.elapsed("products")
    prog.tick("products", done, len(gen.catalog), f"upserted {report.products_upserted:,}", force=True)
    prog.finish("products")


async def _load_segments(cfg: DemoConfig, stub: Any, report: LoadReport, prog: Progress) -> None:
    t0 = time.perf_counter()
    for segment in demo_segments():
        reply = await _call(f"PutSegment {segment.segment_id}", functools.partial(
            stub.PutSegment, segment_pb2.PutSegmentRequest(segment=segment), timeout=CALL_TIMEOUT_S), report)
        report.segments += reply is not None
    for offer in demo_offers(cfg.end_ms):
        reply = await _call(f"PutOffer {offer.offer_id}", functools.partial(
            stub.PutOffer, segment_pb2.PutOfferRequest(offer=offer), timeout=CALL_TIMEOUT_S), report)
        report.offers += reply is not None
    report.durations["segments"] = time.perf_counter() - t0
    prog.say(f"segments {report.segments}, offers {report.offers}")


async def _load_events(cfg: DemoConfig, gen: HistoryGenerator, profile_stubs: list[Any], gateway: Any,
                       recommend: Any, report: LoadReport, prog: Progress, *, batch_size: int,
                       batch_timeout: float, keep_sessions: bool,
                       identify_registered: bool,
                       generated: Callable[[list[list[str]]], None]) -> list[tuple[str, str]]:
    prog.start("events", cfg.n_shoppers, "shoppers")
    identify_pairs: list[tuple[str, str]] = []
    sessions: list[list[str]] = []
    session_bytes = 0
    observe_since = cfg.end_ms - OBSERVE_VIEW_DAYS * DAY_MS

    async def track_chunk(stub: Any, shard: int, chunk: list[Any]) -> None:
        request = profile_pb2.TrackBatchRequest(events=chunk)
        summary = await _call(f"TrackBatch shard {shard} ({len(chunk)} events from {chunk[0].event_id})",
                               lambda: stub.TrackBatch(request, timeout=batch_timeout), report)
        if summary is None:
            report.events_rejected += len(chunk)
            return
        report.events_accepted += summary.accepted
        report.events_duplicate += summary.duplicates
        report.events_rejected += summary.rejected
        for message in list(summary.errors)[:3]:
            report.error(f"TrackBatch: {message}")

    async def track_batch(stub: Any, shard: int, batch: list[Any]) -> None:
        # TrackBatch requests of at most 1,000, all in flight at once: the profile service folds
        # them into one group commit (fewer profile and page writes per event than one each).
        await asyncio.gather(*(track_chunk(stub, shard, batch[start:start + TRACK_BATCH_MAX])
                               for start in range(0, len(batch), TRACK_BATCH_MAX)))

    async def observe_batch(batch: list[Any]) -> None:
        summary = await _call(f"Observe ({len(batch)} events)",
                               lambda: recommend.Observe(iter(batch), timeout=batch_timeout), report)
        if summary is not None:
            report.observed += summary.observed
            report.observe_ignored += summary.ignored

    pipes: list[_Pipe] = []
    route: Callable[[str], int] | None = None
    gateway_tasks: set[asyncio.Task[Any]] = set()
    if profile_stubs:
        route = shard_function(len(profile_stubs))
        if route is None:
            if gateway is None:
                raise RuntimeError("several profile shards but services.gateway.router is not importable; "
                                   "pass gateway_address to route through the gateway")
            profile_stubs = []
            report.error("services.gateway.router not importable: tracking through the gateway")
    if profile_stubs:
        pipes = [_Pipe(f"profile[{i}]", functools.partial(track_batch, stub, i), batch_size, CONCURRENCY)
                 for i, stub in enumerate(profile_stubs)]
    # The gateway's Track observes best-effort by itself: no separate Observe then.
    observe_pipe = _Pipe("observe", observe_batch, batch_size, CONCURRENCY) \
        if recommend is not None and profile_stubs else None

    async def gateway_track(event: Any) -> None:
        reply = await _call(f"gateway Track {event.event_id}", lambda: gateway.Track(
            profile_pb2.TrackRequest(event=event), timeout=CALL_TIMEOUT_S), report)
        if reply is None:
            report.events_rejected += 1
        elif reply.applied:
            report.events_accepted += 1
        else:
            report.events_duplicate += 1

    for shopper in iter_shoppers(gen.config, gen.catalog):
        history = gen.history(shopper)
        report.shoppers += 1
        if history.identify:
            identify_pairs.append(history.identify)
        elif identify_registered and shopper.customer_id and history.visits:
            identify_pairs.append((visitor_id(shopper.index, gen.id_width), shopper.customer_id))
        for event in gen.to_events(history):
            report.events += 1
            if pipes:
                await pipes[route(event.user_id) if route else 0].put(event)
                if observe_pipe is not None and (
                        event.type in OBSERVE_TYPES
                        or (event.type == PRODUCT_VIEW and event.timestamp_ms >= observe_since)):
                    await observe_pipe.put(event)
            else:
                while len(gateway_tasks) >= GATEWAY_TRACK_CONCURRENCY:
                    _, gateway_tasks = await asyncio.wait(gateway_tasks, return_when=asyncio.FIRST_COMPLETED)
                gateway_tasks.add(asyncio.ensure_future(gateway_track(event)))
        if keep_sessions and session_bytes < TRAIN_MAX_BYTES:
            for session in gen.sessions_of(history, min_length=2):
                size = 4 + sum(len(p) + 2 for p in session.product_ids)
                if session_bytes + size > TRAIN_MAX_BYTES:
                    break
                sessions.append(session.product_ids)
                session_bytes += size
        prog.tick("events", report.shoppers, cfg.n_shoppers,
                  f"events {report.events:,}, accepted {report.events_accepted:,}")
        if report.shoppers % 256 == 0:
            await asyncio.sleep(0)  # let in-flight calls (and in-process servers) progress
    generated(sessions)
    for pipe in pipes:
        await pipe.close()
    if observe_pipe is not None:
        await observe_pipe.close()
    if gateway_tasks:
        await asyncio.gather(*gateway_tasks)
    report.durations["events"] = prog.elapsed("events")
    prog.tick("events", report.shoppers, cfg.n_shoppers, f"events {report.events:,}: accepted "
              f"{report.events_accepted:,}, duplicates {report.events_duplicate:,}, rejected "
              f"{report.events_rejected:,}, observed {report.observed:,}", force=True)
    prog.finish("events")
    return identify_pairs


async def _identify(pairs: list[tuple[str, str]], profile_stubs: list[Any], gateway: Any,
                    report: LoadReport, prog: Progress) -> None:
    """Identify the shoppers who logged in: the gateway when given (it handles shards), else the profile
    service itself, or the gateway's router code across several shards."""
    t0 = time.perf_counter()
    if gateway is not None:
        call: Callable[[Any], Any] = lambda req: gateway.Identify(req, timeout=CALL_TIMEOUT_S)  # noqa: E731
    elif len(profile_stubs) == 1:
        call = lambda req: profile_stubs[0].Identify(req, timeout=CALL_TIMEOUT_S)  # noqa: E731
    else:
        try:
            from services.gateway.router import ProfileRouter
        except ImportError:  # pragma: no cover
            report.error(f"cannot Identify {len(pairs)} shoppers across shards without the gateway")
            return
        router = ProfileRouter(profile_stubs)
        call = lambda req: router.identify(req, CALL_TIMEOUT_S)  # noqa: E731
    sem = asyncio.Semaphore(IDENTIFY_CONCURRENCY)

    async def one(anonymous_id: str, customer_id: str) -> None:
        request = profile_pb2.IdentifyRequest(anonymous_id=anonymous_id, customer_id=customer_id,
                                              traits={"source": "demo", "signup": "checkout"})
        async with sem:
            reply = await _call(f"Identify {anonymous_id} -> {customer_id}", lambda: call(request), report)
        if reply is not None:
            report.identified += 1

    await asyncio.gather(*(one(a, c) for a, c in pairs))
    report.durations["identify"] = time.perf_counter() - t0
    prog.say(f"identified {report.identified:,}/{len(pairs):,} customers")


async def _train(sessions: list[list[str]], recommend: Any, report: LoadReport, prog: Progress,
                 call_seconds: float) -> None:
    if not sessions:
        report.error("no sessions to train on")
        return
    prog.say(f"training on {len(sessions):,} sessions")
    t0 = time.perf_counter()
    report.train_sessions = len(sessions)
    request = recommend_pb2.TrainRequest(
        sessions=[recommend_pb2.TrainRequest.Session(product_ids=s) for s in sessions])
    try:
        reply = await recommend.Train(request, timeout=call_seconds)
    except grpc.aio.AioRpcError as err:
        report.error(f"Train: {err.code().name}: {err.details()}")
        return
    finally:
        report.durations["train"] = time.perf_counter() - t0
    report.model_version = reply.model_version
    report.trained_items = reply.items
    report.trained_interactions = reply.interactions
    prog.say(f"model {reply.model_version}: {reply.items:,} items, {reply.interactions:,} interactions "
             f"({report.durations['train']:.1f}s)")
