"""The results aggregator fed with LoggedEvent items directly: attribution, login merges,
erasure, exactly-once resume from the stored cursor, and SRM when exposures of one variant are lost."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from services.segmentation.experiments import ExperimentSet
from services.segmentation.results import ExperimentResults, apply_all
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import profile_pb2 as p
from vitrine.v1 import recommend_pb2 as r
from vitrine.v1 import segment_pb2 as s

T0 = 1_763_900_000_000
EXP = s.Experiment(experiment_id="home-test", slot_id="home-top", starts_ms=T0, ends_ms=T0 + 10_000_000,
                   variants=[s.Variant(variant_id="control", weight=1, strategy=r.TRENDING),
                             s.Variant(variant_id="for-you", weight=1, strategy=r.FOR_YOU)])


class Feed:
    def __init__(self) -> None:
        self.seq = itertools.count(1)

    def event(self, user: str, kind: int, t: int, **fields: object) -> p.LoggedEvent:
        seq = next(self.seq)
        return p.LoggedEvent(seq=seq, canonical_user_id=user, event=c.Event(
            event_id=f"e{seq}", user_id=user, type=kind, timestamp_ms=t, **fields))  # type: ignore[arg-type]

    def exposure(self, user: str, variant: str, t: int, experiment: str = "home-test") -> p.LoggedEvent:
        return self.event(user, c.EXPOSURE, t, exposures=[c.ExperimentExposure(
            experiment_id=experiment, variant_id=variant, slot_id="home-top")])

    def identity(self, anon: str, customer: str) -> p.LoggedEvent:
        return p.LoggedEvent(seq=next(self.seq), canonical_user_id=customer,
                             identity=p.Identity(anonymous_id=anon, customer_id=customer))

    def erasure(self, user: str, *aliases: str) -> p.LoggedEvent:
        return p.LoggedEvent(seq=next(self.seq), erasure=p.Erasure(user_id=user, aliases=aliases))


@pytest.fixture
def results(tmp_path: Path) -> ExperimentResults:
    exps = ExperimentSet([EXP])
    agg = ExperimentResults(tmp_path / "results", lambda: exps)
    yield agg
    agg.close()


def by_variant(agg: ExperimentResults) -> dict[str, object]:
    return {v.counts.variant_id: v for v in agg.results(EXP).report.variants}


def test_attribution(results: ExperimentResults) -> None:
    f = Feed()
    results.apply([
        f.event("a", c.PURCHASE, T0 + 5, price=99.0, quantity=1, product_id="x", order_id="o0"),  # before exposure
        f.exposure("a", "control", T0 + 10),
        f.exposure("a", "control", T0 + 20),                       # repeated exposure: one user
        f.event("a", c.PRODUCT_VIEW, T0 + 30, product_id="x", slot_id="home-top"),    # a click from the slot
        f.event("a", c.PRODUCT_VIEW, T0 + 31, product_id="y", slot_id="pdp-similar"),  # another slot: no click
        f.event("a", c.ADD_TO_CART, T0 + 40, product_id="x", slot_id="home-top"),
        f.event("a", c.PURCHASE, T0 + 50, price=10.0, quantity=3, product_id="x", order_id="o1"),
        f.event("a", c.PURCHASE, T0 + 51, price=5.0, product_id="z", order_id="o1"),
        f.exposure("b", "for-you", T0 + 10),
        f.event("b", c.PURCHASE, T0 + 10_000_001, price=50.0, product_id="x", order_id="o2"),  # after the end
        f.exposure("c", "for-you", T0 - 1),                        # before the start: not exposed
        f.exposure("d", "nope", T0 + 1),                           # unknown variant
        f.exposure("d", "control", T0 + 1, experiment="other"),    # unknown experiment
    ])
    v = by_variant(results)
    control, test = v["control"], v["for-you"]
    assert (control.counts.users, control.counts.converters, control.counts.revenue) == (1, 1, 35.0)
    assert (control.counts.clicks, control.counts.add_to_carts) == (2, 1)
    assert (test.counts.users, test.counts.converters, test.counts.revenue) == (1, 0, 0.0)
    assert results.unit_variant("home-test", "d") == ""


def test_login_merge_and_mixed(results: ExperimentResults) -> None:
    f = Feed()
    results.apply([
        f.exposure("anon-1", "for-you", T0 + 1),
        f.event("anon-1", c.PURCHASE, T0 + 2, price=20.0, product_id="x", order_id="o1"),
        f.identity("anon-1", "cust-1"),                      # login: the unit moves to the customer
        f.event("cust-1", c.PURCHASE, T0 + 3, price=30.0, product_id="x", order_id="o2"),
        f.exposure("cust-2", "control", T0 + 1),             # a customer exposed before on another device
        f.exposure("anon-2", "for-you", T0 + 5),
        f.identity("anon-2", "cust-2"),                      # both exposed: one unit, the earlier variant
    ])
    assert results.unit_variant("home-test", "anon-1") == ""
    assert results.unit_variant("home-test", "cust-1") == "for-you"
    assert results.unit_variant("home-test", "cust-2") == "control"
    v = by_variant(results)
    assert (v["for-you"].counts.users, v["for-you"].counts.revenue, v["for-you"].counts.converters) == (1, 50.0, 1)
    assert v["control"].counts.users == 1
    assert results.results(EXP).mixed_users == 1


def test_erasure_drops_the_shopper_records(results: ExperimentResults) -> None:
    f = Feed()
    results.apply([f.exposure("u", "control", T0 + 1), f.erasure("u")])
    assert results.unit_variant("home-test", "u") == ""
    assert by_variant(results)["control"].counts.users == 1   # the anonymous sum stays


def test_resume_is_exactly_once(tmp_path: Path) -> None:
    exps = ExperimentSet([EXP])
    f = Feed()
    items = [f.exposure(f"u{i}", "control" if i % 2 else "for-you", T0 + i) for i in range(100)]
    items += [f.event(f"u{i}", c.PURCHASE, T0 + 200 + i, price=1.0, product_id="x", order_id=f"o{i}")
              for i in range(100)]
    agg = ExperimentResults(tmp_path / "r", lambda: exps)
    apply_all(agg, items[:130], batch=7)
    assert agg.cursor() == 130
    agg.close()
    again = ExperimentResults(tmp_path / "r", lambda: exps)   # a restart: state and cursor from LMDB
    assert again.cursor() == 130
    assert again.apply(items[100:140]) == 10                 # a replay of an overlap counts only the new ones
    apply_all(again, items[140:], batch=50)
    v = {x.counts.variant_id: x.counts for x in again.results(EXP).report.variants}
    assert (v["control"].users, v["control"].converters, v["control"].revenue) == (50, 50, 50.0)
    assert (v["for-you"].users, v["for-you"].converters) == (50, 50)
    assert again.results(EXP).items_seen == 200
    again.close()


def test_srm_flagged_when_one_variants_exposures_are_dropped(tmp_path: Path) -> None:
    exps = ExperimentSet([EXP])
    rng = random.Random(5)
    f = Feed()
    healthy, broken = [], []
    for i in range(4000):
        unit = f"v{i}"
        (a,) = exps.assign(unit, [], T0 + 1)
        item = f.exposure(unit, a.variant_id, T0 + 1)
        healthy.append(item)
        # a client that drops 10 % of one variant's exposures (a slower page, say)
        if a.variant_id == "control" or rng.random() > 0.10:
            broken.append(item)
    for name, items, flagged in (("healthy", healthy, False), ("broken", broken, True)):
        agg = ExperimentResults(tmp_path / name, lambda: exps)
        agg.apply(items)
        report = agg.results(EXP).report
        assert report.srm_detected is flagged, (name, report.srm_p_value)
        agg.close()
    agg = ExperimentResults(tmp_path / "broken", lambda: exps)
    agg.forget("home-test")
    assert agg.results(EXP).report.variants[0].counts.users == 0
    agg.close()
