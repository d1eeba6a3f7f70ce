"""The rule program (scoring.rules.program): shared work, string codes, windows and its checks.
Its results are checked against the reference interpreter in test_rule_properties.py."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.rules import VT, compile_program
from scoring.rules.plain import features
from scoring.rules.program import OUT
from tests.segmentation.rules_support import NOW, compile_


def instructions(program: object) -> int:
    rows = program.code.reshape(-1, 5)[1:]  # type: ignore[attr-defined]
    return int((rows[:, 0] != OUT).sum())


def test_shared_sub_expressions_are_computed_once() -> None:
    a = compile_('visit_count >= 2 and context.device_type == "mobile"')
    b = compile_('visit_count >= 2 and context.device_type == "mobile" and registered')
    c = compile_('context.device_type == "mobile" and visit_count >= 2')  # other order: its own `and`
    alone = [instructions(compile_program([r.expr])) for r in (a, b, c)]
    together = compile_program([a.expr, b.expr, c.expr, a.expr])
    assert instructions(together) < sum(alone)
    assert len(together.numbers) == 2 and len(together.strings) == 1   # visit_count, registered; device_type
    data = {"visit_count": 3, "registered": True, "context": {"device_type": "mobile"}}
    assert together.matching(features(together, data, NOW), NOW).tolist() == [0, 1, 2, 3]


def test_unknown_strings_compare_equal_only_to_themselves() -> None:
    rule = compile_('customer_id == context.device_type and customer_id != "mobile"')
    program = compile_program([rule.expr])
    assert program.compare_strings
    assert program.encode(["zz", "q", "zz", "mobile", ""]) == [-1, -2, -1, program.symbols["mobile"], 0]
    same = {"customer_id": "zz", "context": {"device_type": "zz"}}
    other = {"customer_id": "zz", "context": {"device_type": "q"}}
    assert program.matching(features(program, same, NOW), NOW).tolist() == [0]
    assert program.matching(features(program, other, NOW), NOW).tolist() == []


def test_windows_bound_outputs_in_time() -> None:
    rule = compile_("true")
    program = compile_program([rule.expr] * 3, windows=[(NOW, NOW + 10), (-np.inf, NOW), (-np.inf, np.inf)])
    empty = features(program, {}, NOW)
    assert program.matching(empty, NOW).tolist() == [0, 2]
    assert program.matching(empty, NOW - 1).tolist() == [1, 2]
    assert program.matching(empty, NOW + 10).tolist() == [2]


def test_bad_inputs_are_refused() -> None:
    rule = compile_("visit_count > 1")
    program = compile_program([rule.expr])
    with pytest.raises(ValueError, match="features"):
        program.matching(np.zeros(3), NOW)
    with pytest.raises(ValueError, match="numbers"):
        program.features([1.0, 2.0], [])
    with pytest.raises(ValueError, match="windows"):
        compile_program([rule.expr], windows=[(0, 1), (0, 1)])
    number = compile_("visit_count > 1").expr.left  # type: ignore[attr-defined]
    assert number.type is VT.NUMBER
    with pytest.raises(ValueError, match="boolean"):
        compile_program([number])
    assert compile_program([]).matching(np.zeros(0), NOW).tolist() == []
