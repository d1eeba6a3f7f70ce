"""The segmentation engine without a server: CRUD validation, Evaluate ordering, offers,
persistence, and EstimateSize over an injected profile stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from scoring.units import DAY_MS as DAY
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.segmentation import builtins
from services.segmentation import config as cfg
from services.segmentation.engine import SegmentEngine
from services.segmentation.store import DefinitionStore
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import segment_pb2 as s

NOW = 1_763_900_000_000


def make_engine(tmp_path: Path | None = None) -> SegmentEngine:
    store = DefinitionStore(tmp_path / "segmentation") if tmp_path else None
    return SegmentEngine(store, clock=lambda: NOW)


async def stream(profiles: Iterable[c.Profile]) -> AsyncIterator[c.Profile]:
    for p in profiles:
        yield p


async def test_put_get_list_delete_segment() -> None:
    engine = make_engine()
    stored = await engine.put_segment(s.Segment(segment_id="runners", rule='category_affinity["running"] > 0.4',
                                                priority=200))
    assert stored.name == "runners" and stored.updated_ms == NOW and not stored.builtin
    assert engine.get_segment("runners") == stored
    assert [x.segment_id for x in engine.list_segments(False)] == ["runners"]
    listed = engine.list_segments(True)
    assert listed[0].segment_id == "runners"
    builtin_ids = {x.segment_id for x in listed if x.builtin}
    assert {"new_visitor", "vip", "at_risk", "cart_abandoner", "geo:*", "source:*"} <= builtin_ids
    assert await engine.delete_segment("runners") is True
    assert await engine.delete_segment("runners") is False
    with pytest.raises(NotFound):
        engine.get_segment("runners")


@pytest.mark.parametrize(("segment", "error", "fragment"), [
    (s.Segment(segment_id="vip", rule="true"), FailedPrecondition, "built-in"),
    (s.Segment(segment_id="geo:FR", rule="true"), FailedPrecondition, "built-in"),
    (s.Segment(segment_id="", rule="true"), InvalidArgument, "segment_id"),
    (s.Segment(segment_id="Upper", rule="true"), InvalidArgument, "segment_id"),
    (s.Segment(segment_id="a" * 65, rule="true"), InvalidArgument, "segment_id"),
    (s.Segment(segment_id="has space", rule="true"), InvalidArgument, "segment_id"),
    (s.Segment(segment_id="ok", rule="true", priority=cfg.PRIORITY_MAX + 1), InvalidArgument, "priority"),
    (s.Segment(segment_id="ok", rule="true", priority=cfg.PRIORITY_MIN - 1), InvalidArgument, "priority"),
    (s.Segment(segment_id="ok", rule="true", name="n" * 201), InvalidArgument, "name"),
    (s.Segment(segment_id="ok", rule=""), InvalidArgument, "empty rule"),
    (s.Segment(segment_id="ok", rule="visit_count >= 3 and\n  devise == 1"), InvalidArgument,
     "rule: line 2, column 3: unknown field 'devise'"),
])
async def test_put_segment_validation(segment: s.Segment, error: type[Exception], fragment: str) -> None:
    engine = make_engine()
    with pytest.raises(error, match=fragment):
        await engine.put_segment(segment)
    assert engine.list_segments(False) == []


async def test_builtins_cannot_be_deleted() -> None:
    engine = make_engine()
    for segment_id in ("new_visitor", "source:email", "utm_campaign:x"):
        with pytest.raises(FailedPrecondition):
            await engine.delete_segment(segment_id)
    assert engine.get_segment("vip").builtin
    assert engine.get_segment("geo:FR").rule == 'last_context.country == "FR"'


async def test_segment_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "MAX_SEGMENTS", 2)
    engine = make_engine()
    await engine.put_segment(s.Segment(segment_id="a", rule="true"))
    await engine.put_segment(s.Segment(segment_id="b", rule="true"))
    await engine.put_segment(s.Segment(segment_id="b", rule="false"))  # replacing is fine
    with pytest.raises(ResourceExhausted):
        await engine.put_segment(s.Segment(segment_id="c", rule="true"))


async def test_evaluate_orders_store_and_builtin_segments_by_priority_then_id() -> None:
    engine = make_engine()
    await engine.put_segment(s.Segment(segment_id="zeta", rule="true", priority=55))
    await engine.put_segment(s.Segment(segment_id="alpha", rule="true", priority=55))
    await engine.put_segment(s.Segment(segment_id="low", rule="true", priority=-5))
    await engine.put_segment(s.Segment(segment_id="never", rule="false", priority=999))
    await engine.put_segment(s.Segment(segment_id="top", rule='context.device_type == "mobile"', priority=999))
    ids, _ = engine.evaluate(c.Profile(), c.Context(device_type="mobile"), NOW)
    assert ids == ["top", "alpha", "zeta", "new_visitor", "guest", "device:mobile", "low"]
    # a replaced rule takes effect at once
    await engine.put_segment(s.Segment(segment_id="top", rule='context.device_type == "tablet"', priority=999))
    assert "top" not in engine.evaluate(c.Profile(), c.Context(device_type="mobile"), NOW)[0]


async def test_context_families_rank_among_store_segments_of_the_same_priority() -> None:
    engine = make_engine()
    priorities = {f.prefix: f.priority for f in builtins.CONTEXT_FAMILIES}
    for segment_id, priority in (("geo:", priorities["geo"]), ("device:", priorities["device"])):
        for name in ("a", "zz"):  # ids just before and after the family id at the same priority
            await engine.put_segment(s.Segment(segment_id=f"{name}-{segment_id[:-1]}", rule="true",
                                               priority=priority))
    ids, _ = engine.evaluate(c.Profile(last_context=c.Context(country="FR")), c.Context(device_type="mobile"), NOW)
    assert ids[-6:] == ["a-geo", "geo:FR", "zz-geo", "a-device", "device:mobile", "zz-device"]


async def test_offers_targeting_a_family_follow_the_last_context_fallback() -> None:
    engine = make_engine()
    await engine.put_offer(offer("fr", "geo:FR"))
    await engine.put_offer(offer("fr-or-vip", "vip", "geo:FR", priority=3))
    await engine.put_offer(offer("de", "geo:DE", priority=2))
    profile = c.Profile(last_context=c.Context(country="FR"))
    for context, geo, expected in ((c.Context(), ["geo:FR"], ["fr-or-vip", "fr"]),
                                   (c.Context(country="FR"), ["geo:FR"], ["fr-or-vip", "fr"]),
                                   (c.Context(country="DE"), ["geo:DE"], ["de"]),
                                   (c.Context(country="X" * 65), [], [])):  # too long: no segment, no offer
        ids, offers = engine.evaluate(profile, context, NOW)
        assert [i for i in ids if i.startswith("geo:")] == geo, context
        assert [o.offer_id for o in offers] == expected, context


def offer(offer_id: str, *segment_ids: str, priority: int = 0, starts: int = 0, ends: int = 0) -> s.Offer:
    return s.Offer(offer_id=offer_id, title=offer_id, segment_ids=segment_ids, priority=priority,
                   starts_ms=starts, ends_ms=ends)


async def test_offers_windows_targets_and_priorities() -> None:
    engine = make_engine()
    await engine.put_segment(s.Segment(segment_id="mobile", rule='context.device_type == "mobile"'))
    for o in (
        offer("always", "new_visitor", priority=1),
        offer("best", "mobile", "vip", priority=50),
        offer("started", "guest", priority=10, starts=NOW),             # starts_ms <= now: active
        offer("not-yet", "guest", priority=99, starts=NOW + 1),
        offer("ending", "guest", priority=20, ends=NOW + 1),            # now < ends_ms: active
        offer("ended", "guest", priority=99, ends=NOW),
        offer("window", "guest", priority=10, starts=NOW - DAY, ends=NOW + DAY),
        offer("other", "vip", priority=100),
        offer("geo", "geo:FR", priority=5),
    ):
        await engine.put_offer(o)
    ids, offers = engine.evaluate(None, c.Context(device_type="mobile", country="FR"), NOW)
    assert ids == ["new_visitor", "guest", "geo:FR", "device:mobile", "mobile"]
    assert [o.offer_id for o in offers] == ["best", "ending", "started", "window", "geo", "always"]
    assert [o.offer_id for o in engine.list_offers(segment_id="guest")] == \
        ["ended", "not-yet", "ending", "started", "window"]
    assert [o.offer_id for o in engine.list_offers(active_only=True, segment_id="guest")] == \
        ["ending", "started", "window"]
    # an offer keeps its segment alive
    with pytest.raises(FailedPrecondition, match="best"):
        await engine.delete_segment("mobile")
    assert await engine.delete_offer("best") is True
    assert await engine.delete_offer("best") is False
    assert await engine.delete_segment("mobile") is True


@pytest.mark.parametrize(("bad", "fragment"), [
    (offer("", "vip"), "offer_id"),
    (offer("x"), "segment_ids is empty"),
    (offer("x", "nope"), "no segment 'nope'"),
    (offer("x", "geo:"), "no segment 'geo:'"),
    (offer("x", "vip", priority=5000), "priority"),
    (offer("x", "vip", starts=NOW, ends=NOW), "must be before"),
    (offer("x", "vip", starts=NOW + 1, ends=NOW), "must be before"),
    (offer("x", "vip", starts=-1), "epoch milliseconds"),
    (s.Offer(offer_id="x", segment_ids=["vip"], title="t" * 201), "title"),
    (s.Offer(offer_id="x", segment_ids=["vip"], payload={f"k{i}": "v" for i in range(51)}), "payload"),
])
async def test_offer_validation(bad: s.Offer, fragment: str) -> None:
    engine = make_engine()
    with pytest.raises(InvalidArgument, match=fragment):
        await engine.put_offer(bad)
    assert engine.list_offers() == []


async def test_definitions_survive_a_restart(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    await engine.open()
    await engine.put_segment(s.Segment(segment_id="big", rule="total_spend > 100", priority=7, name="Big"))
    await engine.put_segment(s.Segment(segment_id="gone", rule="true"))
    await engine.delete_segment("gone")
    await engine.put_offer(offer("o1", "big", priority=3))
    engine.close()

    again = make_engine(tmp_path)
    await again.open()
    assert [x.segment_id for x in again.list_segments(False)] == ["big"]
    assert again.get_segment("big").name == "Big"
    assert [o.offer_id for o in again.list_offers()] == ["o1"]
    ids, offers = again.evaluate(c.Profile(total_spend=150), None, NOW)
    assert ids == ["new_visitor", "guest", "big"] and [o.offer_id for o in offers] == ["o1"]
    again.close()


async def test_stored_rule_that_no_longer_compiles_is_kept_but_skipped(tmp_path: Path) -> None:
    store = DefinitionStore(tmp_path / "segmentation")
    store.put_segment(s.Segment(segment_id="old", rule="removed_field > 1"))
    store.put_segment(s.Segment(segment_id="fine", rule="true"))
    store.close()
    engine = make_engine(tmp_path)
    await engine.open()
    assert engine.get_segment("old").rule == "removed_field > 1"
    assert "old" not in engine.evaluate(None, None, NOW)[0]
    assert "fine" in engine.evaluate(None, None, NOW)[0]
    with pytest.raises(FailedPrecondition):
        engine.rule_for_estimate("old")
    engine.close()


async def test_estimate_size_over_injected_shards() -> None:
    engine = make_engine()
    await engine.put_segment(s.Segment(segment_id="spenders", rule="total_spend >= 100"))
    shard_a = [c.Profile(user_id=f"a{i}", total_spend=i * 10, visit_count=i) for i in range(20)]
    shard_b = [c.Profile(user_id=f"b{i}", last_context=c.Context(country="FR" if i % 2 else "DE"))
               for i in range(7)]
    rule = engine.rule_for_estimate("spenders")
    assert await engine.estimate_size(rule, [stream(shard_a), stream(shard_b)], NOW) == (10, 27)
    rule = engine.rule_for_estimate(rule="visit_count >= 2 and visit_count < 5")
    assert await engine.estimate_size(rule, [stream(shard_a), stream(shard_b)], NOW) == (3, 27)
    geo = engine.rule_for_estimate("geo:FR")
    assert await engine.estimate_size(geo, [stream(shard_a), stream(shard_b)], NOW) == (3, 27)
    new = engine.rule_for_estimate("new_visitor")
    assert await engine.estimate_size(new, [stream(shard_a), stream(shard_b)], NOW) == (2 + 7, 27)
    assert await engine.estimate_size(rule, [stream([])], NOW) == (0, 0)


async def test_estimate_size_errors() -> None:
    engine = make_engine()
    with pytest.raises(NotFound):
        engine.rule_for_estimate("nope")
    with pytest.raises(InvalidArgument, match="segment_id or a rule"):
        engine.rule_for_estimate()
    with pytest.raises(InvalidArgument, match="line 1, column 14"):
        engine.rule_for_estimate(rule="visit_count >")
    with pytest.raises(InvalidArgument, match="value after the colon"):
        engine.rule_for_estimate("geo:")
