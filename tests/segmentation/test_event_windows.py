"""events(TYPE, days=N) windows: the wire kernel and the protobuf-API pass against the obvious sum."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.rules import compile_program, compile_rule
from services.segmentation.fields import SCHEMA, EventWindows, WireReader, reading_order
from vitrine.v1 import common_pb2 as c

TODAY = 20_415
NOW = TODAY * 86_400_000 + 43_200_000
NAMES = sorted(v.name for v in c.EventType.DESCRIPTOR.values if v.number != 0)
counters = st.lists(st.tuples(st.integers(-5, TODAY + 3), st.integers(0, 11), st.integers(0, 2**31 - 1)),
                    max_size=60)
queries = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(1, 365)), min_size=1, max_size=12)


def events_slow(profile: c.Profile, event: str, days: int, today: int) -> float:
    """events(event, days=days) through the protobuf API: the obvious version."""
    code = c.EventType.Value(event)
    first = today - days + 1
    return float(sum(e.count for e in profile.daily_events if e.type == code and first <= e.day <= today))


def profile_of(rows: list[tuple[int, int, int]]) -> c.Profile:
    profile = c.Profile(user_id="u", visit_count=3, traits={"a": "b"}, cart=[c.CartItem(product_id="p")])
    for day, kind, count in rows:
        profile.daily_events.add(day=day, type=kind, count=count)
    return profile


@settings(max_examples=150, deadline=None)
@given(rows=counters, wanted=queries)
def test_windows_on_both_paths_are_the_obvious_sums(rows: list[tuple[int, int, int]],
                                                    wanted: list[tuple[str, int]]) -> None:
    rule = compile_rule(" or ".join(f'events("{name}", days={days}) > 0' for name, days in wanted), SCHEMA)
    program = compile_program([rule.expr], reading_order(rule.accesses))
    profile = profile_of(rows)
    expected = {a.key: events_slow(profile, a.field, a.arg, TODAY) for a in rule.accesses}  # type: ignore[arg-type]
    one_pass = EventWindows(rule.accesses).sums(profile, NOW)
    assert dict(zip([a.key for a in EventWindows(rule.accesses).accesses], one_pass, strict=True)) == expected
    from_wire = WireReader(program).read(profile, c.Context(), NOW)
    assert dict(zip([a.key for a in program.numbers], from_wire.tolist(), strict=True)) == expected
