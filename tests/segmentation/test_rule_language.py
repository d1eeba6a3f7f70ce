"""The rule language: grammar, semantics, type errors and error positions."""

from __future__ import annotations

import pytest

from scoring.rules import RuleError
from scoring.rules.parser import MAX_DEPTH, MAX_RULE_CHARS
from tests.segmentation.rules_support import DAY, NOW, TODAY, compile_, matches, reference, vectorized

SHOPPER = {
    "visit_count": 4,
    "total_spend": 120.5,
    "registered": True,
    "customer_id": "c-1",
    "last_seen_ms": NOW - 2 * DAY,
    "recently_viewed": ["p9", "p3"],
    "category_affinity": {"running": 0.7, "yoga": 0.1},
    "traits": {"gender": "f", "tier": "gold"},
    "rfm": {"r_score": 5, "m_score": 3},
    "context": {"device_type": "mobile", "utm": {"campaign": "spring"}},
    "daily_events": [(TODAY, "PURCHASE", 1), (TODAY - 10, "PURCHASE", 2), (TODAY - 40, "PURCHASE", 5),
                     (TODAY, "PAGE_VIEW", 7), (TODAY + 1, "PURCHASE", 100)],
}


@pytest.mark.parametrize(("rule", "expected"), [
    ("visit_count >= 3", True),
    ("visit_count > 4", False),
    ("visit_count == 4 and total_spend < 200", True),
    ("visit_count == 4 and total_spend > 200", False),
    ("visit_count == 1 or total_spend > 100", True),
    ("not registered", False),
    ("not not registered", True),
    ("registered == true", True),
    ('customer_id != ""', True),
    ('context.device_type == "mobile"', True),
    ("context.device_type == 'mobile'", True),
    ('context.device_type in ["tablet", "mobile"]', True),
    ('context.device_type not in ["tablet", "mobile"]', False),
    ('context.utm.campaign == "spring"', True),
    ('category_affinity["running"] > 0.4', True),
    ('category_affinity["golf"] == 0', True),
    ('traits["gender"] == "f"', True),
    ('traits["missing"] == ""', True),
    ("rfm.r_score + rfm.m_score >= 8", True),
    ("rfm.r_score * 2 - 1 == 9", True),
    ("-visit_count < -3", True),
    ("visit_count in [1, 2, 4]", True),
    ("visit_count in []", False),
    ('"p3" in recently_viewed', True),
    ('"p4" in recently_viewed', False),
    ('"p4" not in recently_viewed', True),
    ('recently_viewed[0] == "p9"', True),
    ('recently_viewed[5] == ""', True),
    ('"running" in category_affinity', True),
    ('"gender" in traits', True),
    ('events("PURCHASE", days=1) == 1', True),
    ('events("PURCHASE", days=30) == 3', True),
    ('events("PURCHASE", days=90) == 8', True),
    ('events("purchase", 90) == 8', True),
    ('events("ADD_TO_CART", days=7) == 0', True),
    ("days_since(last_seen_ms) < 7", True),
    ("days_since(last_seen_ms) == 2", True),
    ("hours_since(last_seen_ms) == 48", True),
    ("minutes_since(last_seen_ms) >= 2880", True),
    ("days_since(last_purchase_ms) > 100000", True),  # never: +infinity
    ("has(customer_id)", True),
    ("has(registered)", True),
    ("has(last_purchase_ms)", False),
    ('has(traits["tier"])', True),
    ('has(traits["age"])', False),
    ("has(recently_viewed)", True),
    ("size(recently_viewed) == 2", True),
    ("size(traits) == 2", True),
    ("true", True),
    ("false or (visit_count > 1 and (total_spend > 100 or false))", True),
    ("visit_count >= 3 # trailing comment\n and registered", True),
    ('visit_count >= 3 and context.device_type == "mobile" and category_affinity["running"] > 0.4 '
     'and events("PURCHASE", days=30) == 3 and days_since(last_seen_ms) < 7', True),
    ("1e1 == 10 and .5 == 0.5 and 2.5e-1 == 0.25", True),
    ('"a\\"b" != "a"', True),
])
def test_rules_on_one_shopper(rule: str, expected: bool) -> None:
    compiled = compile_(rule)
    assert matches(compiled, SHOPPER) is expected
    assert reference(compiled, SHOPPER) is expected
    assert vectorized(compiled, [SHOPPER, SHOPPER]).tolist() == [expected, expected]


def test_empty_profile_has_defaults() -> None:
    assert matches("visit_count == 0 and not registered and customer_id == \"\"", {})
    assert matches('traits["x"] == "" and category_affinity["x"] == 0 and size(recently_viewed) == 0', {})
    assert matches("days_since(last_seen_ms) > 1000000 and not has(last_seen_ms)", {})
    assert not matches('events("PURCHASE", days=365) > 0', {})


def test_precedence_and_binds_tighter_than_or() -> None:
    # true or (false and false) -> true; (true or false) and false -> false
    assert matches("registered or visit_count == 0 and total_spend == 0", SHOPPER)
    assert not matches("(registered or visit_count == 0) and total_spend == 0", SHOPPER)
    assert matches("rfm.r_score + rfm.m_score * 2 == 11", SHOPPER)


def test_fields_lists_what_the_rule_reads() -> None:
    rule = compile_('visit_count > 1 and events("PURCHASE", days=7) > 0 and "yoga" in category_affinity')
    assert rule.fields == ("visit_count", "daily_events", "category_affinity")


@pytest.mark.parametrize(("rule", "line", "column", "fragment"), [
    ("", 1, 1, "empty rule"),
    ("   \n  ", 2, 3, "empty rule"),
    ("visit_count >", 1, 14, "ends too early"),
    ("visit_count >= 3 and", 1, 21, "ends too early"),
    ("(visit_count >= 3", 1, 18, "expected )"),
    ("visit_count >= 3)", 1, 17, "unexpected ')'"),
    ("visit_count >= 3 registered", 1, 18, "unexpected 'registered'"),
    ("visit_count >= 3 && registered", 1, 18, "use and / or / not"),
    ("visit_count = 3", 1, 13, "unexpected '='"),
    ('context.device_type == "mobile', 1, 24, "unterminated string"),
    ('traits["a\\q"] == ""', 1, 10, "unknown escape"),
    ("visit_count > 3abc", 1, 15, "malformed number"),
    ("1 < visit_count < 3", 1, 17, "do not chain"),
    ("visit_cont >= 3", 1, 1, "unknown field 'visit_cont'; did you mean visit_count?"),
    ("visit_count >= 3 and\n    contxt.device_type == \"x\"", 2, 5, "unknown field 'contxt.device_type'"),
    ('visit_count >= "3"', 1, 16, "needs a number"),
    ('registered == "yes"', 1, 12, "cannot compare a boolean with a string"),
    ("visit_count", 1, 1, "must be true or false"),
    ("visit_count and registered", 1, 1, "and needs a boolean"),
    ("not visit_count", 1, 5, "not needs a boolean"),
    ('customer_id + "x" == "y"', 1, 1, "+ needs a number"),
    ("recently_viewed == 1", 1, 1, "is a list<string>"),
    ("category_affinity > 1", 1, 1, "is a map<string,number>"),
    ('visit_count in ["a"]', 1, 17, "list item is a string"),
    ("visit_count in [1, visit_count]", 1, 20, "must be literals"),
    ("visit_count in registered", 1, 16, "in needs a list literal"),
    ('customer_id in "abc"', 1, 16, "in needs a list literal"),
    ('customer_id in recently_viewed', 1, 1, "must be a string literal"),
    ("[1, 2] == visit_count", 1, 1, "a list can only stand"),
    ("category_affinity[running] > 1", 1, 19, "must be a string literal"),
    ('recently_viewed["a"] == ""', 1, 17, "whole number"),
    ('recently_viewed[1.5] == ""', 1, 17, "whole number"),
    ('visit_count["a"] == 1', 1, 12, "only maps and lists"),
    ("foo(visit_count)", 1, 1, "unknown function foo()"),
    ("day_since(last_seen_ms) > 1", 1, 1, "did you mean days_since()"),
    ('events("BUY", days=3) > 0', 1, 8, "unknown event type 'BUY'"),
    ('events("PURCHASE") > 0', 1, 1, "events() takes"),
    ('events("PURCHASE", days=0) > 0', 1, 25, "days must be a whole number from 1 to 365"),
    ('events("PURCHASE", days=366) > 0', 1, 25, "from 1 to 365"),
    ('events("PURCHASE", days=1.5) > 0', 1, 25, "whole number"),
    ('events("PURCHASE", weeks=2) > 0', 1, 26, "no argument 'weeks'"),
    ('events(customer_id, days=2) > 0', 1, 8, "string literal"),
    ("days_since(visit_count) > 1", 1, 12, "needs a timestamp field"),
    ("days_since(1) > 1", 1, 12, "exactly one field"),
    ("size(visit_count) > 1", 1, 6, "needs a list or map"),
    ("has(visit_count + 1)", 1, 17, "has() takes a field"),
    ("has(recently_viewed[0])", 1, 20, "has() takes a field"),
    ('events("PURCHASE", days=2, days=3) > 0', 1, 28, "given twice"),
])
def test_errors_name_the_position(rule: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_(rule)
    err = info.value
    assert fragment in err.reason, err.reason
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_limits_on_size_and_depth() -> None:
    with pytest.raises(RuleError, match="limit is"):
        compile_("registered or " * (MAX_RULE_CHARS // 14) + "registered")
    with pytest.raises(RuleError, match="nested deeper"):
        compile_("(" * (MAX_DEPTH + 1) + "registered" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(RuleError, match="nested deeper"):
        compile_("not " * (MAX_DEPTH + 1) + "registered")
    assert matches("(" * 20 + "registered" + ")" * 20, SHOPPER)


def test_rules_are_never_evaluated_as_python() -> None:
    for rule in ('__import__("os").system("true")', "visit_count.__class__ == 1", "exec('1')"):
        with pytest.raises(RuleError):
            compile_(rule)


def test_events_window_counts_today_back_and_ignores_future_days() -> None:
    data = {"daily_events": [(TODAY - 6, "PURCHASE", 1), (TODAY - 7, "PURCHASE", 10), (TODAY + 1, "PURCHASE", 5)]}
    assert matches('events("PURCHASE", days=7) == 1', data)
    assert matches('events("PURCHASE", days=8) == 11', data)
    # the window moves with "now"
    assert matches('events("PURCHASE", days=1) == 5', data, now=NOW + DAY)
