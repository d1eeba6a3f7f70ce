"""Storage-level checks: erasure leaves no key or value of the user in any LMDB database,
the retention purge, idempotency expiry and the RFM sketch's persistence."""

from __future__ import annotations

from pathlib import Path

import lmdb

from services.profile.config import SERVICE_NAME
from services.profile.store import DB_NAMES, LmdbProfileStore
from tests.profile.conftest import make_service
from tests.profile.helpers import DAY_MS, ET, ev, now_ms
from tests.support import channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

pb = profile_pb2


def lmdb_mentions(path: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    """Every (db, key) of the environment whose key or value contains one of `needles`."""
    found = []
    env = lmdb.open(str(path), max_dbs=len(DB_NAMES) + 2, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]  # the main DB lists the named DBs
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    if any(n in key or n in value for n in needles):
                        found.append((name.decode(), key))
    finally:
        env.close()
    return found


async def test_erasure_leaves_nothing_of_the_user_in_lmdb(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    t = now_ms()
    async with serving(service, service.config) as running, channel_to(running) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        events = [ev(ET.PRODUCT_VIEW, user="anon-erase", t=t - i, event_id=f"ev-anon-{i}") for i in range(20)]
        events += [ev(ET.PURCHASE, user="cust-erase", t=t - i, price=5, order_id=f"o{i}", event_id=f"ev-cust-{i}")
                   for i in range(20)]
        events += [ev(ET.PURCHASE, user="bystander", t=t, price=7, order_id="ob", event_id="ev-by")]
        assert (await stub.TrackStream(iter(events), timeout=30)).accepted == 41
        await stub.Identify(pb.IdentifyRequest(anonymous_id="anon-erase", customer_id="cust-erase",
                                               traits={"email": "erase@example.com"}), timeout=10)
        await stub.PutAlias(pb.PutAliasRequest(alias_id="device-erase", target_id="cust-erase"), timeout=10)
        await stub.SetConsent(pb.SetConsentRequest(user_id="cust-erase",
                                                   consent=common_pb2.Consent(marketing=True)), timeout=10)
        answer = await stub.DeleteProfile(pb.DeleteProfileRequest(user_id="cust-erase"), timeout=10)
        assert answer.deleted and answer.events_deleted == 40 and answer.aliases_deleted == 2
        bystander = await stub.GetProfile(pb.GetProfileRequest(user_id="bystander"), timeout=10)
        assert bystander.rfm.frequency == 1
    path = tmp_path / SERVICE_NAME
    needles = [b"anon-erase", b"cust-erase", b"device-erase", b"ev-anon-", b"ev-cust-", b"erase@example.com"]
    # The one mention left is the Erasure item of the feed, which must name the erased ids so
    # that every consumer can erase what it derived; the user's earlier feed items are gone.
    left = lmdb_mentions(path, needles)
    assert [db for db, _ in left] == ["log"], left
    env = lmdb.open(str(path), max_dbs=len(DB_NAMES) + 2, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(b"log", create=False)) as txn:
            item = pb.LoggedEvent.FromString(txn.get(left[0][1]))
    finally:
        env.close()
    assert item.WhichOneof("item") == "erasure"
    assert (item.erasure.user_id, list(item.erasure.aliases)) == ("cust-erase", ["anon-erase", "device-erase"])
    assert lmdb_mentions(path, [b"bystander"])  # the check can see what is there
    store = LmdbProfileStore(path)
    try:
        assert store.rfm.total == 1  # the erased buyer left the RFM population
    finally:
        store.close()


def test_purge_jumps_between_users_and_resumes(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    try:
        t = now_ms()
        events = []
        for u in range(30):
            events += [ev(ET.PAGE_VIEW, user=f"user{u:02d}", t=t - d * DAY_MS, event_id=f"{u}-{d}")
                       for d in range(10)]
        store.apply_events(events, t)
        cutoff = t - 4 * DAY_MS - 1  # keeps days 0..4
        deleted, start = 0, b""
        calls = 0
        while start is not None:
            n, start = store.purge_events(cutoff, start, 40)
            deleted += n
            calls += 1
        assert deleted == 30 * 5 and calls > 1
        assert store.count("events") == 30 * 5
        assert all(e.event.timestamp_ms > cutoff for e in store.user_events("user07"))
        removed, start = store.expire_idempotency(t // 1000 + 10, b"", 100)
        assert removed == 100 and start is not None
        removed, start = store.expire_idempotency(t // 1000 + 10, start, 10_000)
        assert removed == 200 and start is None and store.count("idem") == 0
    finally:
        store.close()


def test_idempotency_keys_expire_then_the_event_applies_again(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    try:
        t = now_ms()
        event = ev(ET.PAGE_VIEW, user="u", t=t, event_id="same")
        assert store.apply_events([event], t)[0].applied
        assert not store.apply_events([event], t)[0].applied
        store.expire_idempotency(t // 1000 - 10, b"", 100)  # not old enough
        assert not store.apply_events([event], t)[0].applied
        store.expire_idempotency(t // 1000 + 10, b"", 100)
        assert store.apply_events([event], t)[0].applied
    finally:
        store.close()


def test_rfm_sketch_persists_with_the_profiles(tmp_path: Path) -> None:
    t = now_ms()
    store = LmdbProfileStore(tmp_path)
    store.apply_events([ev(ET.PURCHASE, user=f"b{i}", t=t, price=10 + i, order_id=f"o{i}") for i in range(5)], t)
    store.apply_events([ev(ET.PURCHASE, user="b0", t=t, price=100, order_id="o-more")], t)
    total, f_counts = store.rfm.total, list(store.rfm.f)
    store.close()
    reopened = LmdbProfileStore(tmp_path)
    try:
        assert reopened.rfm.total == total == 5 and reopened.rfm.f == f_counts
        assert reopened.rfm.f[1] == 4 and reopened.rfm.f[2] == 1
    finally:
        reopened.close()


def test_batch_with_the_same_user_many_times_is_one_write(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    try:
        t = now_ms()
        results = store.apply_events([ev(ET.PAGE_VIEW, user="u", t=t + i, event_id=f"x{i}") for i in range(100)]
                                     + [ev(ET.PAGE_VIEW, user="u", t=t, event_id="x5")], t)
        assert [r.applied for r in results].count(False) == 1
        state = store.get("u")
        assert state is not None and state.profile.event_count == 100
        assert len(store.user_events("u")) == 100
    finally:
        store.close()


async def test_a_full_store_answers_resource_exhausted_and_changes_nothing(tmp_path: Path) -> None:
    import pytest

    from services.common.errors import ResourceExhausted
    from services.profile.engine import ProfileEngine

    engine = ProfileEngine(LmdbProfileStore(tmp_path, map_size_mb=1, sync=False))
    await engine.start()
    try:
        assert (await engine.track(ev(ET.PAGE_VIEW, user="small"))).applied
        big = [ev(ET.PAGE_VIEW, user=f"user-{i}", page_url="x" * 2000) for i in range(2000)]

        async def feed():  # type: ignore[no-untyped-def]
            for event in big:
                yield event

        with pytest.raises(ResourceExhausted, match="map-size-mb"):
            await engine.track_stream(feed())
        # whatever committed before the store filled up is whole: log, keys and profiles agree
        store = engine.store
        counted = sum(p.profile.event_count for p in store.scan_profiles("", 10_000))
        assert store.count("events") == store.count("idem") == counted < 2001
        assert engine.get_profile("small").event_count == 1  # still readable
    finally:
        await engine.stop()


async def test_a_failing_batch_is_retried_per_caller(tmp_path: Path) -> None:
    import asyncio

    import pytest

    from services.profile.engine import ProfileEngine

    store = LmdbProfileStore(tmp_path, sync=False)
    original = store.apply_events

    def apply_events(events, now_ms):  # type: ignore[no-untyped-def]
        if any(e.user_id == "poison" for e in events):
            raise RuntimeError("a bug that only this event triggers")
        return original(events, now_ms)

    store.apply_events = apply_events  # type: ignore[method-assign]
    engine = ProfileEngine(store)
    await engine.start()
    try:
        good = [engine.track(ev(ET.PAGE_VIEW, user=f"good-{i}")) for i in range(20)]
        results = await asyncio.gather(*good[:10], engine.track(ev(ET.PAGE_VIEW, user="poison")), *good[10:],
                                       return_exceptions=True)
        assert isinstance(results[10], RuntimeError)
        assert all(r.applied for i, r in enumerate(results) if i != 10)
        assert store.count("events") == 20
        with pytest.raises(RuntimeError):
            await engine.track(ev(ET.PAGE_VIEW, user="poison"))
    finally:
        await engine.stop()
