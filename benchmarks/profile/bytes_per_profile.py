"""Bytes per profile on disk with N shoppers (default 1,000,000), written through the store.

Each shopper gets 1..8 events (mean 4.5: page and product views, searches, cart adds, and a
purchase for one in five), folded and stored exactly as the service does it (profile, event
log, idempotency keys), in large transactions without fsync (durability does not change the
size). Reports the pages each LMDB database uses, per shopper, then deletes the files.

    .venv/bin/python -m benchmarks.profile.bytes_per_profile --shoppers 1000000
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from services.profile.store import DB_NAMES, LmdbProfileStore
from vitrine.v1 import common_pb2

ET = common_pb2.EventType


def shopper_events(rng: random.Random, user: int, now_ms: int) -> list[common_pb2.Event]:
    n = rng.randint(1, 8)
    t = now_ms - rng.randrange(60 * 86_400_000)
    session = f"s{rng.getrandbits(40):x}"
    ctx = common_pb2.Context(device_type=rng.choice(["mobile", "desktop", "tablet"]),
                             country=rng.choice(["DE", "FR", "US", "GB"]), traffic_source="organic")
    out = []
    for i in range(n):
        kind = rng.choice([ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.PRODUCT_VIEW, ET.PRODUCT_VIEW, ET.SEARCH,
                           ET.ADD_TO_CART])
        e = common_pb2.Event(event_id=f"{rng.getrandbits(64):016x}", user_id=f"visitor-{user:08d}",
                             session_id=session, type=kind, timestamp_ms=t + i * 30_000,
                             category=f"category-{rng.randrange(60)}")
        if kind in (ET.PRODUCT_VIEW, ET.ADD_TO_CART):
            e.product_id = f"sku-{rng.randrange(50_000):06d}"
            e.price = round(rng.uniform(5, 150), 2)
        if kind == ET.SEARCH:
            e.query = f"query {rng.randrange(500)}"
        if i == 0:
            e.context.CopyFrom(ctx)
        out.append(e)
    if rng.random() < 0.2:
        out.append(common_pb2.Event(event_id=f"{rng.getrandbits(64):016x}", user_id=f"visitor-{user:08d}",
                                    session_id=session, type=ET.PURCHASE, timestamp_ms=t + n * 30_000,
                                    product_id=f"sku-{rng.randrange(50_000):06d}", price=49.9,
                                    order_id=f"order-{user}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shoppers", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000, help="events per write transaction")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="vitrine-profile-bytes-"))
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    store = LmdbProfileStore(root / "profile", map_size_mb=32_768, sync=False)
    started = time.perf_counter()
    events_total = 0
    try:
        pending: list[common_pb2.Event] = []
        for user in range(args.shoppers):
            pending.extend(shopper_events(rng, user, now_ms))
            if len(pending) >= args.batch:
                store.apply_events(pending, now_ms)
                events_total += len(pending)
                pending = []
            if user and user % 100_000 == 0:
                rate = events_total / (time.perf_counter() - started)
                print(f"  {user:,} shoppers, {events_total:,} events, {rate:,.0f} events/s", flush=True)
        if pending:
            store.apply_events(pending, now_ms)
            events_total += len(pending)
        store.env.sync(True)
        elapsed = time.perf_counter() - started
        n = args.shoppers
        print(f"wrote {n:,} shoppers and {events_total:,} events in {elapsed:.0f} s "
              f"({events_total / elapsed:,.0f} events/s, no fsync)")
        with store.env.begin() as txn:
            total_pages = 0
            for name in DB_NAMES:
                stat = txn.stat(store.dbs[name.decode()])
                pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                total_pages += pages
                size = pages * stat["psize"]
                print(f"  {name.decode():10s} {stat['entries']:>11,} entries {size / 1e6:9.1f} MB "
                      f"{size / n:8.0f} B/shopper")
        psize = store.env.stat()["psize"]
        used = (store.env.info()["last_pgno"] + 1) * psize
        on_disk = sum(f.stat().st_blocks * 512 for f in (root / "profile").iterdir())
        print(f"profiles DB alone: see the 'profiles' row; all databases: {total_pages * psize / n:.0f} B/shopper; "
              f"file pages in use {used / n:.0f} B/shopper; allocated on disk {on_disk / n:.0f} B/shopper")
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
