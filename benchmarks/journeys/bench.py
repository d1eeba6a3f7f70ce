"""Bounded benchmarks of the journeys service (loopback only). Four parts:

    machines  feed items per second through the eight journeys' state machines and the LMDB
              transaction they commit in (in process), against a same-run baseline that does only
              the storage work every item needs (one JSON state read and write in LMDB)
    follow    events per second the journeys service follows from a real profile service's
              FollowEvents (both in process, real gRPC on 127.0.0.1), catching up on a loaded log
    timers    memory per pending timer: RSS and LMDB bytes with N pending timers (default 1M), and
              the cost of one timer-loop look at the head of the due queue at that size
    lateness  timer lateness p50/p99 with 100k pending timers: K messages falling due over a few
              seconds, sent through the real timer loop against real profile and recommendation
              servers (GetProfile, GetProduct, Recommend per message)

    .venv/bin/python -m benchmarks.journeys.bench machines --events 100000
    .venv/bin/python -m benchmarks.journeys.bench follow --events 50000
    .venv/bin/python -m benchmarks.journeys.bench timers --timers 1000000
    .venv/bin/python -m benchmarks.journeys.bench lateness --pending 100000 --due 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from scoring.units import DAY_MS
from services.journeys.feed import FeedApplier
from services.journeys.machines import ProductInfo, machine_for
from services.journeys.store import JourneyStore
from vitrine.demo.journeys import DEMO_JOURNEYS
from vitrine.v1 import common_pb2, journey_pb2, profile_pb2

ET = common_pb2.EventType
JK = journey_pb2.JourneyKind
MIX = ((ET.PAGE_VIEW, 30), (ET.PRODUCT_VIEW, 35), (ET.ADD_TO_CART, 12), (ET.REMOVE_FROM_CART, 3),
       (ET.PURCHASE, 5), (ET.SEARCH, 7), (ET.EMAIL_OPEN, 5), (ET.EMAIL_CLICK, 3))


def rss_bytes(kind: str = "RssAnon") -> int:
    """Resident memory of this process: RssAnon (heap: what the process holds) or RssFile (mapped
    file pages, here LMDB's, which the kernel may drop and re-read at will)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) * 1024
    return 0


def events(n: int, users: int, products: int, start_ms: int, seed: int = 0) -> Iterator[profile_pb2.LoggedEvent]:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    for seq in range(1, n + 1):
        kind = rng.choice(kinds)
        user = f"u{rng.randrange(users)}"
        event = common_pb2.Event(event_id=f"e{seq}", user_id=user, session_id=f"s{rng.randrange(3)}", type=kind,
                                 timestamp_ms=start_ms + seq * 10, product_id=f"p{rng.randrange(products)}")
        if kind == ET.PURCHASE:
            event.price, event.order_id = 20.0, f"o{seq}"
        yield profile_pb2.LoggedEvent(seq=seq, event=event, canonical_user_id=user)


def catalog() -> list[common_pb2.Product]:
    """20 products in stock, as in the service tests."""
    return [common_pb2.Product(product_id=f"p{i}", title=f"Product {i}", category="shoes" if i < 10 else "bags",
                               price=10.0 + i, stock=5, currency="EUR") for i in range(20)]


def open_store(root: Path, sync: bool) -> JourneyStore:
    return JourneyStore(root, map_size_mb=32_768, sync=sync)


def bench_machines(args: argparse.Namespace) -> None:
    items = list(events(args.events, args.users, 2000, int(time.time() * 1000) - DAY_MS))
    batch = 256
    root = Path(tempfile.mkdtemp(prefix="vitrine-journeys-bench-"))
    try:
        # Baseline: the storage every item costs anyway (one JSON state read and write per item,
        # the same batching and the same environment settings), no journey logic.
        base = open_store(root / "baseline", sync=not args.no_sync)
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            with base.write() as txn:
                for item in items[i:i + batch]:
                    key = item.canonical_user_id.encode() + b"\x00j"
                    raw = txn.get(key, db=base.db["states"])
                    state = json.loads(raw) if raw else {}
                    state["n"] = state.get("n", 0) + 1
                    txn.put(key, json.dumps(state).encode(), db=base.db["states"])
        baseline = time.perf_counter() - started
        base.close()

        store = open_store(root / "journeys", sync=not args.no_sync)
        applier = FeedApplier(store, attribution_ms=5 * DAY_MS)
        applier.set_machines(machine_for(j) for j in DEMO_JOURNEYS)
        with store.write() as txn:   # a catalog, so back-in-stock has out-of-stock products to watch
            for p in range(2000):
                store.put_product(txn, f"p{p}", ProductInfo(0 if p % 10 == 0 else 5, 10.0 + p % 50))
        started = time.perf_counter()
        for i in tqdm(range(0, len(items), batch), desc="feed", unit="batch"):
            applier.apply_events(items[i:i + batch])
        elapsed = time.perf_counter() - started
        with store.read() as txn:
            pending = store.count(txn, "timers")
            states = store.count(txn, "states")
        store.close()
        print(f"machines: {args.events:,} events, {args.users:,} shoppers, 8 journeys (the demo's), "
              f"sync={'off' if args.no_sync else 'on'}, batches of {batch}")
        print(f"  journeys: {args.events / elapsed:,.0f} events/s ({elapsed * 1e6 / args.events:.1f} µs/event), "
              f"{states:,} states, {pending:,} pending timers")
        print(f"  baseline (one JSON state get+put per event): {args.events / baseline:,.0f} events/s "
              f"({baseline * 1e6 / args.events:.1f} µs/event)")
        print(f"  ratio journeys / baseline time: {elapsed / baseline:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def bench_follow(args: argparse.Namespace) -> None:
    """The profile service runs as its own process (as under `vitrine up`); the journeys service in
    this one. Event times are now, so the journeys' timers are pending, not due: this measures
    following the feed, not sending (see `lateness`)."""
    import subprocess
    import sys

    import grpc

    from services.journeys.app import JourneysService
    from services.journeys.config import JourneysConfig
    from vitrine.health import wait_serving
    from vitrine.ports import free_port
    from vitrine.serving import serving
    from vitrine.v1 import profile_pb2_grpc

    root = Path(tempfile.mkdtemp(prefix="vitrine-journeys-follow-"))
    port = free_port()
    profile = subprocess.Popen([sys.executable, "-m", "services.profile", "--port", str(port), "--data-dir",  # noqa: ASYNC220
                                str(root / "p"), "--log-level", "WARNING", "--purge-interval-seconds", "0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{port}"
        await asyncio.to_thread(wait_serving, address, time.monotonic() + 120, profile)
        async with grpc.aio.insecure_channel(address) as ch:
            stub = profile_pb2_grpc.ProfileServiceStub(ch)
            now = int(time.time() * 1000) - args.events * 10
            loaded = [item.event for item in events(args.events, args.users, 2000, now)]
            for i in tqdm(range(0, len(loaded), 1000), desc="load profile", unit="batch"):
                await stub.TrackBatch(profile_pb2.TrackBatchRequest(events=loaded[i:i + 1000]), timeout=60)
            last = await stub.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                event_id="last", user_id="u0", type=ET.PAGE_VIEW, timestamp_ms=int(time.time() * 1000))))
        config = JourneysConfig(port=0, data_dir=str(root / "j"), profile_addresses=address,
                                recommendation_address="127.0.0.1:1", segmentation_address="",
                                sync=not args.no_sync)
        service = JourneysService(config)
        for journey in DEMO_JOURNEYS:
            service.engine.put_journey(journey)
        started = time.perf_counter()
        async with serving(service, config):
            assert service.feeds is not None
            await service.feeds.event_followers[0].wait_for_cursor(last.seq + 1)
            elapsed = time.perf_counter() - started
            with service.store.read() as txn:
                pending = service.store.count(txn, "timers")
        print(f"follow: {args.events:,} logged events caught up by the journeys service in {elapsed:.2f} s: "
              f"{args.events / elapsed:,.0f} events/s (8 demo journeys, {pending:,} timers pending after, "
              f"sync={'off' if args.no_sync else 'on'}; profile service in its own process)")
    finally:
        profile.terminate()
        profile.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def bench_timers(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="vitrine-journeys-timers-"))
    try:
        store = open_store(root, sync=False)
        applier = FeedApplier(store, attribution_ms=5 * DAY_MS)
        win_back = journey_pb2.Journey(journey_id="win-back", kind=JK.WIN_BACK, enabled=True, params={"days": "90"})
        applier.set_machines([machine_for(win_back)])
        now = int(time.time() * 1000)
        anon_before, file_before = rss_bytes(), rss_bytes("RssFile")
        batch: list[profile_pb2.LoggedEvent] = []
        for seq in tqdm(range(1, args.timers + 1), desc="timers", unit="timer", mininterval=1.0):
            user = f"customer-{seq:08d}"
            batch.append(profile_pb2.LoggedEvent(seq=seq, canonical_user_id=user, event=common_pb2.Event(
                user_id=user, type=ET.PURCHASE, product_id="p1", order_id=f"o{seq}", price=10.0,
                timestamp_ms=now - random.randrange(60) * DAY_MS)))
            if len(batch) == 4096:
                applier.apply_events(batch)
                batch = []
        applier.apply_events(batch)
        anon_after, file_after = rss_bytes(), rss_bytes("RssFile")
        with store.read() as txn:
            pending = store.count(txn, "timers")
            stats = {name: txn.stat(store.db[name]) for name in ("timers", "states")}
        page = store.env.stat()["psize"]
        pages = {name: s["leaf_pages"] + s["branch_pages"] + s["overflow_pages"] for name, s in stats.items()}
        started = time.perf_counter()
        looks = 1000
        for _ in range(looks):
            with store.read() as txn:
                store.due_timers(txn, now + 31 * DAY_MS, 64)
        look = (time.perf_counter() - started) / looks
        file_bytes = os.path.getsize(root / "data.mdb")
        store.close()
        print(f"timers: {pending:,} pending win-back timers")
        print(f"  process heap (RssAnon): {anon_before / 2**20:.0f} MiB before, {anon_after / 2**20:.0f} MiB after "
              f"({(anon_after - anon_before) / pending:+.1f} B per timer)")
        print(f"  mapped LMDB pages (RssFile): {file_before / 2**20:.0f} -> {file_after / 2**20:.0f} MiB "
              f"(page cache the kernel may drop; not held by the process)")
        print(f"  LMDB: timers db {pages['timers'] * page / pending:.0f} B per timer, states db "
              f"{pages['states'] * page / pending:.0f} B per timer's state; data.mdb {file_bytes / 2**20:.0f} MiB")
        print(f"  one look at the head of the due queue (read txn + 64 due keys): {look * 1e6:.0f} µs")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def bench_lateness(args: argparse.Namespace) -> None:
    import grpc

    from services.journeys.app import send_settings
    from services.journeys.backends import GrpcBackends
    from services.journeys.config import JourneysConfig
    from services.journeys.engine import JourneyEngine
    from services.profile.app import ProfileService
    from services.profile.config import ProfileConfig
    from services.recommendation.app import build_service as build_recommendation
    from services.recommendation.config import RecommendationConfig
    from vitrine.serving import serving
    from vitrine.v1 import profile_pb2_grpc, recommend_pb2_grpc

    root = Path(tempfile.mkdtemp(prefix="vitrine-journeys-lateness-"))
    try:
        profile = ProfileService(ProfileConfig(port=0, data_dir=str(root / "p"), purge_interval_seconds=0.0))
        async with serving(profile, profile.config) as p_running, \
                grpc.aio.insecure_channel(p_running.address) as p_channel:
            recommendation = build_recommendation(RecommendationConfig(
                port=0, data_dir=str(root / "r"), snapshot_seconds=0.0, profile_addresses=p_running.address))
            async with serving(recommendation, recommendation.config) as r_running, \
                    grpc.aio.insecure_channel(r_running.address) as r_channel:
                await recommend_pb2_grpc.RecommendServiceStub(r_channel).UpsertProducts(iter(catalog()), timeout=30)
                profiles = profile_pb2_grpc.ProfileServiceStub(p_channel)
                users = [f"c{i}" for i in range(args.due)]
                for user in tqdm(users, desc="customers", unit="customer"):
                    await profiles.Identify(profile_pb2.IdentifyRequest(anonymous_id=f"a{user}", customer_id=user))
                    await profiles.SetConsent(profile_pb2.SetConsentRequest(
                        user_id=user, consent=common_pb2.Consent(marketing=True)))
                config = JourneysConfig(port=0, data_dir=str(root / "j"), profile_addresses=p_running.address,
                                        recommendation_address=r_running.address, segmentation_address="",
                                        quiet_start_hour=0, quiet_end_hour=0, frequency_cap=0, sync=True)
                store = JourneyStore(root / "j", sync=True)
                lateness: list[int] = []
                done = asyncio.Event()

                def on_due(late_ms: int, kind: str) -> None:
                    lateness.append(late_ms)
                    if len(lateness) >= args.due:
                        done.set()

                backends = GrpcBackends(config)
                engine = JourneyEngine(store, backends, send_settings(config), on_due=on_due)
                engine.put_journey(journey_pb2.Journey(journey_id="win-back", kind=JK.WIN_BACK, enabled=True,
                                                       params={"days": "90"}))
                engine.put_journey(journey_pb2.Journey(journey_id="cart", kind=JK.ABANDONED_CART, enabled=True,
                                                       delay_ms=0, k=2))
                now = int(time.time() * 1000)
                seq = 0
                batch: list[profile_pb2.LoggedEvent] = []
                for i in tqdm(range(args.pending), desc="pending", unit="timer", mininterval=1.0):
                    seq += 1
                    user = f"far-{i}"
                    batch.append(profile_pb2.LoggedEvent(seq=seq, canonical_user_id=user, event=common_pb2.Event(
                        user_id=user, type=ET.PURCHASE, product_id="p1", order_id=f"o{i}", price=10.0,
                        timestamp_ms=now)))
                    if len(batch) == 4096:
                        engine.apply_events(batch)
                        batch = []
                # The due ones: spread over the window, starting a little after the timer loop starts.
                start = int(time.time() * 1000) + 1000
                step = args.window_ms / args.due
                for i, user in enumerate(users):
                    seq += 1
                    batch.append(profile_pb2.LoggedEvent(seq=seq, canonical_user_id=user, event=common_pb2.Event(
                        user_id=user, type=ET.ADD_TO_CART, product_id=f"p{i % 20}",
                        timestamp_ms=start + int(i * step))))
                engine.apply_events(batch)
                await engine.start()
                await asyncio.wait_for(done.wait(), timeout=args.window_ms / 1000 + 120)
                await engine.stop()
                await backends.close()
                store.close()
        q = statistics.quantiles(lateness, n=100)
        print(f"lateness: {args.due:,} messages due over {args.window_ms / 1000:.0f} s "
              f"({args.due / args.window_ms * 1000:,.0f}/s) with {args.pending:,} other timers pending; "
              f"each send asks profile, recommendation (GetProduct, Recommend) over gRPC")
        print(f"  lateness p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms, max {max(lateness)} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    m = sub.add_parser("machines")
    m.add_argument("--events", type=int, default=100_000)
    m.add_argument("--users", type=int, default=10_000)
    m.add_argument("--no-sync", action="store_true")
    f = sub.add_parser("follow")
    f.add_argument("--events", type=int, default=50_000)
    f.add_argument("--users", type=int, default=10_000)
    f.add_argument("--no-sync", action="store_true")
    t = sub.add_parser("timers")
    t.add_argument("--timers", type=int, default=1_000_000)
    late = sub.add_parser("lateness")
    late.add_argument("--pending", type=int, default=100_000)
    late.add_argument("--due", type=int, default=2_000)
    late.add_argument("--window-ms", type=int, default=10_000)
    args = parser.parse_args()
    if args.part == "machines":
        bench_machines(args)
    elif args.part == "follow":
        asyncio.run(bench_follow(args))
    elif args.part == "timers":
        bench_timers(args)
    else:
        asyncio.run(bench_lateness(args))


if __name__ == "__main__":
    main()
