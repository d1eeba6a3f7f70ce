"""Every ProfileService RPC through a real in-process server, with a bad-input case per RPC."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from tests.profile.conftest import Profiles, make_service
from tests.profile.helpers import DAY_MS, ET, MIN_MS, ev, now_ms
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

pb = profile_pb2
BAD = grpc.StatusCode.INVALID_ARGUMENT


async def track(p: Profiles, event: common_pb2.Event) -> pb.TrackResponse:
    return await p.stub.Track(pb.TrackRequest(event=event), timeout=10)


async def get(p: Profiles, user_id: str) -> common_pb2.Profile:
    return await p.stub.GetProfile(pb.GetProfileRequest(user_id=user_id), timeout=10)


async def stream(p: Profiles, events: list[common_pb2.Event]) -> pb.TrackSummary:
    return await p.stub.TrackStream(iter(events), timeout=30)


async def test_track_applies_once_and_answers_durably(profiles: Profiles) -> None:
    event = ev(ET.PRODUCT_VIEW, product_id="p9", category="shoes")
    first = await track(profiles, event)
    assert (first.applied, first.user_id) == (True, "u1")
    again = await track(profiles, event)
    assert not again.applied
    p = await get(profiles, "u1")
    assert p.event_count == 1 and list(p.recently_viewed) == ["p9"]
    assert dict(p.category_affinity) == {"shoes": 1.0}
    assert p.consent.personalization and not p.consent.marketing


async def test_track_bad_event_is_rejected_and_changes_nothing(profiles: Profiles) -> None:
    bad = ev(ET.PURCHASE, user="nobody", order_id="")
    err = await assert_status(track(profiles, bad), BAD)
    assert "event.order_id is required for PURCHASE" in err.details()
    late = ev(ET.PAGE_VIEW, user="nobody", t=now_ms() + 60 * MIN_MS)
    err = await assert_status(track(profiles, late), BAD)
    assert "event.timestamp_ms" in err.details()
    await assert_status(get(profiles, "nobody"), grpc.StatusCode.NOT_FOUND)


async def test_track_stream_counts_accepted_duplicates_rejected(profiles: Profiles) -> None:
    events = [ev(ET.PAGE_VIEW, event_id=f"s{i}") for i in range(600)]
    events.insert(10, ev(ET.SEARCH, event_id="bad-search", query=""))
    events.append(ev(ET.PAGE_VIEW, event_id="s3"))  # duplicate within the stream
    summary = await stream(profiles, events)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (600, 1, 1)
    assert summary.errors == ["event 10 (bad-search): event.query is required for SEARCH"]
    again = await stream(profiles, events[:50])
    assert (again.accepted, again.duplicates, again.rejected) == (0, 49, 1)
    assert (await get(profiles, "u1")).event_count == 600


async def test_get_profile_unknown_and_bad_id(profiles: Profiles) -> None:
    await assert_status(get(profiles, "ghost"), grpc.StatusCode.NOT_FOUND)
    err = await assert_status(get(profiles, ""), BAD)
    assert "user_id is required" in err.details()


async def test_all_fields_through_the_service(profiles: Profiles) -> None:
    t = now_ms() - 2 * DAY_MS
    ctx = common_pb2.Context(device_type="mobile", country="DE", traffic_source="email",
                             utm=common_pb2.Utm(campaign="spring"))
    events = [
        ev(ET.PAGE_VIEW, t=t, session_id="a", context=ctx),
        ev(ET.PRODUCT_VIEW, t=t + 1, session_id="a", product_id="p1", category="shoes"),
        ev(ET.SEARCH, t=t + 2, session_id="a", query="red shoes"),
        ev(ET.ADD_TO_CART, t=t + 3, session_id="a", product_id="p1", price=50, quantity=2),
        ev(ET.ADD_TO_CART, t=t + 4, session_id="a", product_id="p2", price=20),
        ev(ET.CHECKOUT, t=t + 5, session_id="a"),
        ev(ET.COUPON_APPLIED, t=t + 6, session_id="a", coupon="SPRING"),
        ev(ET.PURCHASE, t=t + 7, session_id="a", product_id="p1", price=50, quantity=2, order_id="o1",
           category="shoes"),
        ev(ET.EMAIL_OPEN, t=t + DAY_MS, campaign_id="c1"),
        ev(ET.EMAIL_CLICK, t=t + DAY_MS + 1, session_id="b", campaign_id="c1",
           context=common_pb2.Context(device_type="desktop")),
    ]
    summary = await stream(profiles, events)
    assert summary.accepted == len(events)
    p = await get(profiles, "u1")
    assert (p.visit_count, p.event_count, p.purchase_count, p.purchase_sessions) == (2, 10, 1, 1)
    assert (p.total_spend, p.avg_order_value, p.avg_session_spend) == (100.0, 100.0, 100.0)
    assert (p.email_opens, p.email_clicks, p.coupon_uses) == (1, 1, 1)
    assert [(i.product_id, i.quantity) for i in p.cart] == [("p2", 1)]
    assert list(p.purchased_product_ids) == ["p1"] and list(p.recent_searches) == ["red shoes"]
    assert p.first_context.utm.campaign == "spring" and p.last_context.device_type == "desktop"
    assert p.first_seen_ms == t and p.last_seen_ms == t + DAY_MS + 1 and p.last_purchase_ms == t + 7
    assert p.last_checkout_ms == t + 5 and p.last_session_id == "b"
    counts = {c.type: c for c in p.event_counts}
    assert counts[ET.PURCHASE].last_7d == 1 and counts[ET.PURCHASE].last_1d == 0
    assert p.rfm.frequency == 1 and p.rfm.monetary == 100.0 and 1 <= p.rfm.r_score <= 5
    assert p.rfm.recency_days == pytest.approx(2.0, abs=0.01)


async def test_rfm_scores_rank_the_population(profiles: Profiles) -> None:
    t = now_ms()
    events = []
    for i in range(10):  # user i: i+1 orders, the last one i days ago
        for n in range(i + 1):
            events.append(ev(ET.PURCHASE, user=f"b{i}", t=t - (i * DAY_MS) - n, price=10.0 * (i + 1),
                             order_id=f"o{i}-{n}"))
    assert (await stream(profiles, events)).accepted == len(events)
    top, bottom = await get(profiles, "b0"), await get(profiles, "b9")
    assert top.rfm.r_score == 5 and top.rfm.f_score == 1 and top.rfm.m_score == 1
    assert bottom.rfm.r_score == 1 and bottom.rfm.f_score == 5 and bottom.rfm.m_score == 5


async def test_concurrent_updates_to_one_shopper_lose_nothing(profiles: Profiles) -> None:
    t = now_ms()
    singles = [ev(ET.PURCHASE, user="hot", t=t, product_id=f"p{i}", price=1.0, order_id=f"o{i}")
               for i in range(150)]
    streamed = [ev(ET.ADD_TO_CART, user="hot", t=t, product_id="cart-item") for _ in range(300)]
    results = await asyncio.gather(
        *(track(profiles, e) for e in singles),
        stream(profiles, streamed[:150]), stream(profiles, streamed[150:]),
        profiles.stub.SetConsent(pb.SetConsentRequest(user_id="hot", consent=common_pb2.Consent(
            personalization=True, marketing=True)), timeout=10),
    )
    assert all(r.applied for r in results[:150])
    p = await get(profiles, "hot")
    assert p.event_count == 450 and p.purchase_count == 150 and p.total_spend == 150.0
    assert [(i.product_id, i.quantity) for i in p.cart] == [("cart-item", 300)]
    assert p.consent.marketing
    assert profiles.engine.batches < 150 + 4  # concurrent calls shared commits


async def test_identify_merges_and_leaves_an_alias(profiles: Profiles) -> None:
    t = now_ms() - 10 * MIN_MS
    await stream(profiles, [
        ev(ET.PRODUCT_VIEW, user="anon", t=t, product_id="a1", category="bags",
           context=common_pb2.Context(device_type="mobile")),
        ev(ET.ADD_TO_CART, user="anon", t=t + 1, product_id="a1", price=5),
        ev(ET.PRODUCT_VIEW, user="cust", t=t - DAY_MS, product_id="c1", category="shoes",
           context=common_pb2.Context(device_type="desktop")),
        ev(ET.PURCHASE, user="cust", t=t - DAY_MS + 1, product_id="c1", price=30, order_id="o1"),
    ])
    merged = await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="cust",
                                                             traits={"email": "a@example.com"}), timeout=10)
    assert (merged.user_id, merged.customer_id, merged.registered) == ("cust", "cust", True)
    assert merged.event_count == 4 and merged.visit_count == 2 and merged.purchase_count == 1
    assert list(merged.recently_viewed) == ["a1", "c1"]
    assert merged.last_context.device_type == "mobile" and merged.first_context.device_type == "desktop"
    assert list(merged.aliases) == ["anon"] and merged.traits["email"] == "a@example.com"
    by_alias = await get(profiles, "anon")
    assert by_alias == await get(profiles, "cust")
    # later events of the anonymous id land on the customer
    answer = await track(profiles, ev(ET.PAGE_VIEW, user="anon"))
    assert answer.user_id == "cust"
    # merging twice is harmless
    again = await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="cust"), timeout=10)
    assert again.event_count == 5 and again.purchase_count == 1
    # the anonymous log moved with it: an old anonymous event re-sent is still a duplicate
    events = await profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="cust"), timeout=10)
    assert len(json.loads(events.json)["events"]) == 5


async def test_identify_bad_input_and_conflicts_change_nothing(profiles: Profiles) -> None:
    await track(profiles, ev(ET.PAGE_VIEW, user="anon"))
    err = await assert_status(profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon"), timeout=10), BAD)
    assert "customer_id is required" in err.details()
    too_many = {f"k{i}": "v" for i in range(60)}
    await assert_status(profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="c",
                                                                  traits=too_many), timeout=10), BAD)
    p = await get(profiles, "anon")
    assert p.user_id == "anon" and not p.registered
    await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="c1"), timeout=10)
    await assert_status(profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="c2"),
                                               timeout=10), grpc.StatusCode.FAILED_PRECONDITION)
    await assert_status(get(profiles, "c2"), grpc.StatusCode.NOT_FOUND)


async def test_identify_without_anonymous_history_registers(profiles: Profiles) -> None:
    p = await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="new-anon", customer_id="c9"), timeout=10)
    assert p.registered and p.user_id == "c9" and list(p.aliases) == ["new-anon"]
    assert (await track(profiles, ev(ET.PAGE_VIEW, user="new-anon"))).user_id == "c9"


async def test_consent_withdrawn_events_recorded_but_marked(profiles: Profiles) -> None:
    await track(profiles, ev(ET.PRODUCT_VIEW, product_id="p1", category="c"))
    withdrawn = await profiles.stub.SetConsent(pb.SetConsentRequest(
        user_id="u1", consent=common_pb2.Consent(personalization=False, marketing=False)), timeout=10)
    assert not withdrawn.consent.personalization and withdrawn.consent.updated_ms > 0
    assert not withdrawn.recently_viewed and not withdrawn.category_affinity
    await track(profiles, ev(ET.PRODUCT_VIEW, product_id="p2", category="c"))
    await track(profiles, ev(ET.PURCHASE, product_id="p2", price=9, order_id="o9"))
    p = await get(profiles, "u1")
    assert not p.recently_viewed and p.purchase_count == 1 and p.event_count == 3
    exported = json.loads((await profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="u1"),
                                                             timeout=10)).json)
    assert [e["personalization_off"] for e in exported["events"]] == [False, True, True]
    # an older decision does not override a newer one
    stale = await profiles.stub.SetConsent(pb.SetConsentRequest(
        user_id="u1", consent=common_pb2.Consent(personalization=True, updated_ms=1)), timeout=10)
    assert not stale.consent.personalization


async def test_set_consent_creates_profile_and_rejects_bad_input(profiles: Profiles) -> None:
    p = await profiles.stub.SetConsent(pb.SetConsentRequest(
        user_id="fresh", consent=common_pb2.Consent(personalization=True, marketing=True)), timeout=10)
    assert p.consent.marketing and p.event_count == 0
    await assert_status(profiles.stub.SetConsent(pb.SetConsentRequest(user_id=""), timeout=10), BAD)
    future = now_ms() + 3_600_000
    await assert_status(profiles.stub.SetConsent(pb.SetConsentRequest(
        user_id="fresh", consent=common_pb2.Consent(updated_ms=future)), timeout=10), BAD)
    assert (await get(profiles, "fresh")).consent.marketing


async def test_export_has_everything_stored(profiles: Profiles) -> None:
    await track(profiles, ev(ET.PRODUCT_VIEW, user="anon", event_id="ea", product_id="x"))
    await track(profiles, ev(ET.PURCHASE, user="cust", event_id="ec", price=3, order_id="o"))
    await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="cust",
                                                    traits={"tier": "gold"}), timeout=10)
    doc = json.loads((await profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="anon"),
                                                        timeout=10)).json)
    assert doc["user_id"] == "cust" and doc["aliases"] == ["anon"]
    assert doc["profile"]["traits"] == {"tier": "gold"}
    assert sorted(e["event_id"] for e in doc["events"]) == ["ea", "ec"]
    assert sorted(k["key"] for k in doc["idempotency_keys"]) == ["ea", "ec"]
    assert doc["stored_state"]["profile"]["user_id"] == "cust"
    await assert_status(profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="ghost"), timeout=10),
                        grpc.StatusCode.NOT_FOUND)
    await assert_status(profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="x" * 500), timeout=10), BAD)


async def test_delete_profile_erases_and_reports(profiles: Profiles) -> None:
    await track(profiles, ev(ET.PAGE_VIEW, user="anon"))
    await track(profiles, ev(ET.PAGE_VIEW, user="cust"))
    await track(profiles, ev(ET.PAGE_VIEW, user="keep"))
    await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="cust"), timeout=10)
    answer = await profiles.stub.DeleteProfile(pb.DeleteProfileRequest(user_id="anon"), timeout=10)
    assert (answer.deleted, answer.events_deleted, answer.aliases_deleted) == (True, 2, 1)
    for user in ("anon", "cust"):
        await assert_status(get(profiles, user), grpc.StatusCode.NOT_FOUND)
    assert (await get(profiles, "keep")).event_count == 1
    again = await profiles.stub.DeleteProfile(pb.DeleteProfileRequest(user_id="cust"), timeout=10)
    assert not again.deleted
    await assert_status(profiles.stub.DeleteProfile(pb.DeleteProfileRequest(user_id=""), timeout=10), BAD)
    # the same event id is new again after erasure: nothing of the user remains
    assert (await track(profiles, ev(ET.PAGE_VIEW, user="cust"))).applied


async def test_scan_profiles_pages_in_key_order(profiles: Profiles) -> None:
    await stream(profiles, [ev(ET.PAGE_VIEW, user=f"user-{i:03d}") for i in range(30)])
    everything = [p.user_id async for p in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(), timeout=10)]
    assert everything == [f"user-{i:03d}" for i in range(30)]
    page = [p async for p in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(limit=5, start_after="user-009"),
                                                        timeout=10)]
    assert [p.user_id for p in page] == [f"user-{i:03d}" for i in range(10, 15)]
    assert all(p.event_counts for p in page)  # derived fields are filled in
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(limit=-1), timeout=10):
            pass
    assert info.value.code() == BAD


async def test_scan_events_grouped_by_user_in_time_order(profiles: Profiles) -> None:
    t = now_ms() - DAY_MS
    events = [ev(ET.PAGE_VIEW if i % 3 else ET.PRODUCT_VIEW, user=f"u{i % 4}", t=t + (50 - i) * 1000)
              for i in range(40)]
    await stream(profiles, events)
    got = [e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(), timeout=10)]
    assert len(got) == 40
    keys = [(e.user_id, e.timestamp_ms) for e in got]
    assert keys == sorted(keys)
    views = [e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(types=[ET.PRODUCT_VIEW]), timeout=10)]
    assert len(views) == 14 and {e.type for e in views} == {ET.PRODUCT_VIEW}
    window = [e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(since_ms=t + 20_000, until_ms=t + 30_000,
                                                                              limit=100), timeout=10)]
    assert {e.timestamp_ms for e in window} == {t + s * 1000 for s in range(20, 30)}
    limited = [e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(limit=7), timeout=10)]
    assert len(limited) == 7
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in profiles.stub.ScanEvents(pb.ScanEventsRequest(since_ms=10, until_ms=5), timeout=10):
            pass
    assert info.value.code() == BAD


async def test_import_profile_merges_once(profiles: Profiles) -> None:
    t = now_ms() - MIN_MS
    await track(profiles, ev(ET.PURCHASE, user="cust", t=t, price=10, order_id="o1"))
    remote = common_pb2.Profile(user_id="cust", visit_count=2, event_count=2, purchase_count=1, total_spend=5.0,
                                purchase_sessions=1, last_seen_ms=t + 1, first_seen_ms=t - DAY_MS,
                                recently_viewed=["r1"], aliases=["anon-elsewhere"], registered=True)
    remote_events = [ev(ET.PRODUCT_VIEW, user="anon-elsewhere", t=t - DAY_MS, product_id="r1", event_id="re1"),
                     ev(ET.PURCHASE, user="anon-elsewhere", t=t + 1, price=5, order_id="o2", event_id="re2")]
    request = pb.ImportProfileRequest(profile=remote, events=remote_events)
    merged = await profiles.stub.ImportProfile(request, timeout=10)
    assert (merged.event_count, merged.purchase_count, merged.total_spend) == (3, 2, 15.0)
    assert merged.registered and "anon-elsewhere" in merged.aliases and "r1" in merged.recently_viewed
    again = await profiles.stub.ImportProfile(request, timeout=10)
    assert (again.event_count, again.total_spend) == (3, 15.0)
    doc = json.loads((await profiles.stub.ExportProfile(pb.ExportProfileRequest(user_id="cust"), timeout=10)).json)
    assert sorted(e["event_id"] for e in doc["events"] if e["event_id"].startswith("re")) == ["re1", "re2"]
    created = await profiles.stub.ImportProfile(pb.ImportProfileRequest(profile=common_pb2.Profile(
        user_id="brand-new", event_count=4)), timeout=10)
    assert created.event_count == 4 and created.user_id == "brand-new"
    await assert_status(profiles.stub.ImportProfile(pb.ImportProfileRequest(profile=common_pb2.Profile()),
                                                    timeout=10), BAD)
    bad_events = pb.ImportProfileRequest(profile=remote, events=[common_pb2.Event(user_id="x", type=ET.PAGE_VIEW)])
    await assert_status(profiles.stub.ImportProfile(bad_events, timeout=10), BAD)
    assert (await get(profiles, "cust")).event_count == 3


async def test_put_alias(profiles: Profiles) -> None:
    await track(profiles, ev(ET.PAGE_VIEW, user="cust"))
    first = await profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="dev-1", target_id="cust"), timeout=10)
    second = await profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="dev-1", target_id="cust"), timeout=10)
    assert first.created and not second.created
    assert (await get(profiles, "dev-1")).user_id == "cust"
    assert list((await get(profiles, "cust")).aliases) == ["dev-1"]
    assert (await track(profiles, ev(ET.PAGE_VIEW, user="dev-1"))).user_id == "cust"
    await assert_status(profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="a", target_id="a"), timeout=10), BAD)
    await assert_status(profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="cust", target_id="dev-1"), timeout=10),
                        grpc.StatusCode.FAILED_PRECONDITION)
    await assert_status(profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="", target_id="x"), timeout=10), BAD)


async def test_retention_purge_runs_in_the_background(profiles: Profiles) -> None:
    t = now_ms()
    await track(profiles, ev(ET.PAGE_VIEW, user="old", t=t - 10 * DAY_MS, event_id="old-1"))
    await track(profiles, ev(ET.PAGE_VIEW, user="old", t=t - 9 * DAY_MS, event_id="old-2"))
    await track(profiles, ev(ET.PAGE_VIEW, user="new", t=t, event_id="new-1"))
    engine = profiles.engine
    engine.retention_days = 5
    engine.idempotency_ttl_hours = 1
    engine.clock = lambda: t + 2 * DAY_MS  # cutoff: 3 days before the newest event
    engine.purge_interval_seconds = 0.05
    purger = asyncio.create_task(engine._purge_loop())
    try:
        for _ in range(400):  # one purge pass removes events and then idempotency keys: wait for both
            await asyncio.sleep(0.05)
            if engine.store.count("events") == 1 and engine.store.count("idem") == 0:
                break
    finally:
        purger.cancel()
    remaining = [e.event.event_id for e in engine.store.user_events("old")]
    assert remaining == [] and engine.store.count("events") == 1
    assert engine.store.count("idem") == 0
    assert (await get(profiles, "old")).event_count == 2  # the profile keeps its counters


async def test_data_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    event = ev(ET.PURCHASE, user="durable", price=4, order_id="o")
    for attempt in range(2):
        service = make_service(tmp_path)
        async with serving(service, service.config) as running, channel_to(running) as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            answer = await stub.Track(pb.TrackRequest(event=event), timeout=10)
            assert answer.applied == (attempt == 0)
            p = await stub.GetProfile(pb.GetProfileRequest(user_id="durable"), timeout=10)
            assert p.event_count == 1 and p.rfm.frequency == 1


async def test_scans_page_through_more_than_one_chunk(profiles: Profiles) -> None:
    events = [ev(ET.PAGE_VIEW, user=f"many-{i % 600:04d}") for i in range(1100)]
    assert (await stream(profiles, events)).accepted == 1100
    users = [p.user_id async for p in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(), timeout=30)]
    assert users == sorted(users) and len(users) == 600
    limited = [p async for p in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(limit=550), timeout=30)]
    assert len(limited) == 550
    logged = [e.event_id async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(), timeout=30)]
    assert sorted(logged) == sorted(e.event_id for e in events)
    some = [e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(limit=700), timeout=30)]
    assert len(some) == 700


async def test_events_racing_an_identify_all_land_on_the_customer(profiles: Profiles) -> None:
    before = [ev(ET.PAGE_VIEW, user="racer") for _ in range(20)]
    await stream(profiles, before)
    racing = [ev(ET.PRODUCT_VIEW, user="racer", product_id=f"p{i}") for i in range(100)]
    results = await asyncio.gather(
        *(track(profiles, e) for e in racing[:50]),
        profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="racer", customer_id="racer-cust"), timeout=10),
        *(track(profiles, e) for e in racing[50:]),
    )
    assert all(r.applied for r in results[:50] + results[51:])
    merged = await get(profiles, "racer")
    assert merged.user_id == "racer-cust" and merged.event_count == 120
    assert len([e async for e in profiles.stub.ScanEvents(pb.ScanEventsRequest(), timeout=10)]) == 120


async def test_resolve_alias_and_get_user_events_for_the_shard_router(profiles: Profiles) -> None:
    t = now_ms()
    await stream(profiles, [ev(ET.PAGE_VIEW, user="mover", t=t - i, event_id=f"m{i}") for i in range(5)])
    await profiles.stub.PutAlias(pb.PutAliasRequest(alias_id="gone", target_id="remote-customer"), timeout=10)
    answer = await profiles.stub.ResolveAlias(pb.ResolveAliasRequest(user_id="gone"), timeout=10)
    assert answer.target_id == "remote-customer"  # the target has no profile here: still answered
    assert (await profiles.stub.ResolveAlias(pb.ResolveAliasRequest(user_id="mover"), timeout=10)).target_id == ""
    await assert_status(profiles.stub.ResolveAlias(pb.ResolveAliasRequest(user_id=""), timeout=10), BAD)
    events = [e async for e in profiles.stub.GetUserEvents(pb.GetUserEventsRequest(user_id="mover"), timeout=10)]
    assert [e.event_id for e in events] == [f"m{i}" for i in range(4, -1, -1)]  # oldest first
    assert {e.user_id for e in events} == {"mover"}
    two = [e async for e in profiles.stub.GetUserEvents(pb.GetUserEventsRequest(user_id="mover", limit=2),
                                                        timeout=10)]
    assert len(two) == 2
    assert [e async for e in profiles.stub.GetUserEvents(pb.GetUserEventsRequest(user_id="gone"), timeout=10)] == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in profiles.stub.GetUserEvents(pb.GetUserEventsRequest(user_id="mover", limit=-1), timeout=10):
            pass
    assert info.value.code() == BAD


async def test_cross_shard_identify_protocol_between_two_stores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The steps of the gateway's cross-shard Identify, against two real profile servers."""
    a_service, b_service = make_service(tmp_path / "a"), make_service(tmp_path / "b")
    async with serving(a_service, a_service.config) as a_run, serving(b_service, b_service.config) as b_run, \
            channel_to(a_run) as a_channel, channel_to(b_run) as b_channel:
        source, dest = profile_pb2_grpc.ProfileServiceStub(a_channel), profile_pb2_grpc.ProfileServiceStub(b_channel)
        t = now_ms() - MIN_MS
        await source.TrackStream(iter([ev(ET.PRODUCT_VIEW, user="anon", t=t + i, product_id=f"a{i}",
                                          event_id=f"an{i}") for i in range(3)]), timeout=10)
        await dest.Track(pb.TrackRequest(event=ev(ET.PURCHASE, user="cust", t=t, price=5, order_id="o1")), timeout=10)
        anon_profile = await source.GetProfile(pb.GetProfileRequest(user_id="anon"), timeout=10)
        events = [e async for e in source.GetUserEvents(pb.GetUserEventsRequest(user_id="anon"), timeout=10)]
        merged = common_pb2.Profile()
        merged.CopyFrom(anon_profile)
        merged.user_id = merged.customer_id = "cust"
        merged.registered = True
        merged.aliases.append("anon")
        for e in events:
            e.user_id = "cust"
        request = pb.ImportProfileRequest(profile=merged, events=events)
        for _ in range(2):  # a retried import changes nothing
            await dest.ImportProfile(request, timeout=10)
            await dest.PutAlias(pb.PutAliasRequest(alias_id="anon", target_id="cust"), timeout=10)
        await source.DeleteProfile(pb.DeleteProfileRequest(user_id="anon"), timeout=10)
        await source.PutAlias(pb.PutAliasRequest(alias_id="anon", target_id="cust"), timeout=10)
        result = await dest.GetProfile(pb.GetProfileRequest(user_id="cust"), timeout=10)
        assert (result.event_count, result.purchase_count, result.registered) == (4, 1, True)
        assert list(result.recently_viewed) == ["a2", "a1", "a0"] and "anon" in result.aliases
        assert (await source.ResolveAlias(pb.ResolveAliasRequest(user_id="anon"), timeout=10)).target_id == "cust"
        # a re-sent anonymous event that reaches the customer's shard is a duplicate
        again = await dest.Track(pb.TrackRequest(event=events[0]), timeout=10)
        assert not again.applied
