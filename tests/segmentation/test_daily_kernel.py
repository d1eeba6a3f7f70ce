"""The events-window kernel (scoring.rules.daily) against its slow reference and the protobuf API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.rules import compile_rule
from scoring.rules.daily import WindowPlan, window_sums_reference
from services.segmentation.fields import KERNEL_MIN_COUNTERS, SCHEMA, EventWindows, events_slow
from vitrine.v1 import common_pb2 as c

TODAY = 20_415
NOW = TODAY * 86_400_000 + 43_200_000
PLAN = dict(field=24, day_field=1, type_field=2, count_field=3)
counters = st.lists(st.tuples(st.integers(-5, TODAY + 3), st.integers(0, 11), st.integers(0, 2**31 - 1)),
                    max_size=60)
queries = st.lists(st.tuples(st.integers(0, 12), st.integers(1, 400)), min_size=1, max_size=12)


def profile_of(rows: list[tuple[int, int, int]]) -> c.Profile:
    profile = c.Profile(user_id="u", visit_count=3, traits={"a": "b"}, cart=[c.CartItem(product_id="p")])
    for day, kind, count in rows:
        profile.daily_events.add(day=day, type=kind, count=count)
    return profile


@settings(max_examples=200, deadline=None)
@given(rows=counters, wanted=queries, today=st.sampled_from([TODAY, TODAY - 30, 0]))
def test_kernel_matches_reference(rows: list[tuple[int, int, int]], wanted: list[tuple[int, int]],
                                  today: int) -> None:
    types = np.array([t for t, _ in wanted])
    days = np.array([d for _, d in wanted])
    plan = WindowPlan(**PLAN, types=types, days=days)
    got = plan.sums(profile_of(rows).SerializeToString(), today)
    assert got is not None
    assert got == window_sums_reference(rows, types, days, today).tolist()


@pytest.mark.parametrize("bad", [b"\xc2\x01\x05\x08", b"\xc2\x01\x02\x08\xff", b"\xff" * 11, b"\x0b"])
def test_malformed_bytes_give_none(bad: bytes) -> None:
    plan = WindowPlan(**PLAN, types=np.array([1]), days=np.array([7]))
    assert plan.sums(bad, TODAY) is None


def test_plan_validates_its_queries() -> None:
    with pytest.raises(ValueError):
        WindowPlan(**PLAN, types=np.array([1, 2]), days=np.array([0, 3]))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(TODAY - 100, TODAY + 2), st.integers(1, 11), st.integers(0, 50)),
                     min_size=0, max_size=3 * KERNEL_MIN_COUNTERS))
def test_events_windows_agree_on_both_paths(rows: list[tuple[int, int, int]]) -> None:
    rule = compile_rule(" or ".join(f'events("{kind}", days={days}) > 0' for kind in ("PURCHASE", "PAGE_VIEW", "SEARCH")
                                    for days in (1, 7, 30, 90, 365)), SCHEMA)
    windows = EventWindows(rule.accesses)
    profile = profile_of(rows)
    sums = windows.sums(profile, NOW)
    for access, value in zip(windows.accesses, sums, strict=True):
        assert value == events_slow(profile, access.field, access.arg, TODAY), access.key
