"""Property tests: the program evaluator (all rules in one pass), the reference interpreter and the
vectorized evaluator agree on random well-typed rules over random profiles."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.rules import VT, compile_program, ir
from scoring.rules.plain import features
from tests.segmentation.rules_support import (
    DAY,
    NOW,
    TODAY,
    compile_,
    matches,
    program_matches,
    reference,
    vectorized,
)

NUM_LEAVES = [
    "visit_count", "total_spend", "rfm.r_score", "rfm.m_score", 'category_affinity["running"]',
    'category_affinity["yoga"]', 'events("PURCHASE", days=7)', 'events("PAGE_VIEW", days=30)',
    'events("ADD_TO_CART", days=1)', "days_since(last_seen_ms)", "hours_since(last_purchase_ms)",
    "minutes_since(last_seen_ms)", "size(recently_viewed)", "size(traits)", "last_seen_ms",
]
STR_LEAVES = ["customer_id", "context.device_type", "context.utm.campaign", 'traits["gender"]',
              "recently_viewed[0]", "recently_viewed[1]"]
BOOL_LEAVES = ["registered", "consent.marketing", '"p1" in recently_viewed', '"running" in category_affinity',
               '"p2" not in recently_viewed', "has(customer_id)", "has(last_seen_ms)", 'has(traits["gender"])',
               "has(recently_viewed)", "has(category_affinity)", "true", "false"]
STRINGS = ["", "a", "mobile", "p1", "p2", "f", "spring"]
NUMBERS = ["0", "1", "2", "3", "7", "0.5", "-1", "1e12", "2.5", "1763900000000"]

str_literal = st.sampled_from(STRINGS).map(lambda s: f'"{s}"')
str_expr = st.one_of(st.sampled_from(STR_LEAVES), str_literal)


def _num(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda e: f"-({e})"),
    )


num_expr = st.recursive(st.one_of(st.sampled_from(NUM_LEAVES), st.sampled_from(NUMBERS)), _num, max_leaves=4)
CMP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


def _bool(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        children.map(lambda e: f"not ({e})"),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: "(" + " and ".join(xs) + ")"),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: "(" + " or ".join(xs) + ")"),
        st.tuples(children, st.sampled_from(["==", "!="]), children).map(lambda t: f"(({t[0]}) {t[1]} ({t[2]}))"),
    )


bool_atom = st.one_of(
    st.sampled_from(BOOL_LEAVES),
    st.tuples(num_expr, CMP, num_expr).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(str_expr, st.sampled_from(["==", "!="]), str_expr).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
    st.tuples(num_expr, st.sampled_from(["in", "not in"]), st.lists(st.sampled_from(NUMBERS), max_size=4))
    .map(lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
    st.tuples(str_expr, st.sampled_from(["in", "not in"]), st.lists(str_literal, max_size=4))
    .map(lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
)
bool_expr = st.recursive(bool_atom, _bool, max_leaves=8)

small_number = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 0.5, -1, 2.5, 1e12]),
                         st.floats(-1e6, 1e6, allow_nan=False), st.integers(-5, 100))
timestamp = st.one_of(st.just(0), st.integers(NOW - 200 * DAY, NOW + DAY), st.just(NOW - 7 * DAY))
# Profile strings include some no rule names ("zz", "q"): they have no symbol code, and two equal ones
# must still compare equal (customer_id == context.device_type), two different ones unequal.
string = st.sampled_from([*STRINGS, "zz", "q"])
profiles = st.fixed_dictionaries({}, optional={
    "visit_count": small_number,
    "total_spend": small_number,
    "registered": st.booleans(),
    "customer_id": string,
    "last_seen_ms": timestamp,
    "last_purchase_ms": timestamp,
    "recently_viewed": st.lists(string, max_size=3),
    "category_affinity": st.dictionaries(st.sampled_from(["running", "yoga", "golf"]), small_number, max_size=3),
    "traits": st.dictionaries(st.sampled_from(["gender", "tier"]), string, max_size=2),
    "rfm": st.fixed_dictionaries({}, optional={"r_score": st.integers(0, 5), "m_score": st.integers(0, 5)}),
    "context": st.fixed_dictionaries({}, optional={
        "device_type": string, "utm": st.fixed_dictionaries({}, optional={"campaign": string})}),
    "consent": st.fixed_dictionaries({}, optional={"marketing": st.booleans()}),
    "daily_events": st.lists(st.tuples(st.integers(TODAY - 40, TODAY + 1),
                                       st.sampled_from(["PURCHASE", "PAGE_VIEW", "ADD_TO_CART"]),
                                       st.integers(0, 5)), max_size=6),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=bool_expr, rows=st.lists(profiles, min_size=1, max_size=6),
       now=st.one_of(st.just(NOW), st.integers(NOW - 3 * DAY, NOW + 3 * DAY)))
def test_program_reference_and_vectorized_agree(rule: str, rows: list[dict[str, Any]], now: int) -> None:
    compiled = compile_(rule)
    one_by_one = [matches(compiled, row, now) for row in rows]
    assert one_by_one == [reference(compiled, row, now) for row in rows], rule
    assert vectorized(compiled, rows, now).tolist() == one_by_one, rule


@settings(max_examples=100, deadline=None)
@given(rule=bool_expr)
def test_generated_rules_round_trip_through_the_parser(rule: str) -> None:
    compiled = compile_(rule)
    assert compiled.source == rule
    assert all(isinstance(a.key, str) for a in compiled.accesses)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(bool_expr, min_size=1, max_size=8), rows=st.lists(profiles, min_size=1, max_size=4),
       now=st.one_of(st.just(NOW), st.integers(NOW - 3 * DAY, NOW + 3 * DAY)))
def test_many_rules_in_one_program_agree_with_the_reference(rules: list[str], rows: list[dict[str, Any]],
                                                            now: int) -> None:
    """Rules share features, constants and sub-expressions in one program; each output stays its rule."""
    compiled = [compile_(r) for r in rules + rules[:2]]  # repeats: whole rules shared too
    for row in rows:
        assert program_matches(compiled, row) == [reference(c, row) for c in compiled], rules
        assert program_matches(compiled, row, now) == [reference(c, row, now) for c in compiled], rules


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(bool_expr, min_size=2, max_size=5), row=profiles,
       targets=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=4),
       windows=st.lists(st.tuples(st.sampled_from([-math.inf, NOW - DAY, NOW, NOW + 1]),
                                  st.sampled_from([math.inf, NOW, NOW + 1, NOW + DAY])), min_size=4, max_size=4))
def test_outputs_built_from_rules_and_windows(rules: list[str], row: dict[str, Any], targets: list[list[int]],
                                              windows: list[tuple[float, float]]) -> None:
    """As the engine targets offers: an `or` of whole rules, true only inside its time window."""
    compiled = [compile_(r) for r in rules]
    wanted = [[compiled[i % len(compiled)] for i in t] for t in targets]
    outputs = [ir.Or(VT.BOOL, tuple(c.expr for c in w)) if w else ir.Const(VT.BOOL, False) for w in wanted]
    exprs = [c.expr for c in compiled] + outputs
    spans = [(-math.inf, math.inf)] * len(compiled) + windows[:len(outputs)]
    program = compile_program(exprs, windows=spans)
    hits = set(program.matching(features(program, row, NOW), NOW).tolist())
    expected = [reference(c, row) for c in compiled]
    expected += [any(reference(c, row) for c in w) and lo <= NOW < hi
                 for w, (lo, hi) in zip(wanted, windows, strict=False)]
    assert [i in hits for i in range(len(exprs))] == expected
