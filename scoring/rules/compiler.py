"""Compile a checked rule into nested Python closures over one record.

A record is any mapping with `record[access.key]` for each access of the rule and
`record[NOW_KEY]` (epoch ms). Closures are built once per rule; evaluating one is a few
dict lookups and comparisons, no tree walk and no `eval`. Common shapes (field op
constant, field in set, short and/or chains) get fused closures.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from scoring.rules import ir
from scoring.rules.ir import NOW_KEY

Record = Mapping[str, Any]
Fn = Callable[[Record], Any]

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "+": operator.add, "-": operator.sub, "*": operator.mul,
}
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
INF = math.inf


def _leaf_vs_const(op: str, key: str, c: Any) -> Fn:
    # One closure per operator: no operator-function call on the hot path.
    if op == "==":
        return lambda r: r[key] == c
    if op == "!=":
        return lambda r: r[key] != c
    if op == "<":
        return lambda r: r[key] < c
    if op == "<=":
        return lambda r: r[key] <= c
    if op == ">":
        return lambda r: r[key] > c
    return lambda r: r[key] >= c


def compile_expr(e: ir.Expr) -> Fn:
    if isinstance(e, ir.Const):
        value = e.value
        return lambda r: value
    if isinstance(e, ir.Leaf):
        key = e.access.key
        return lambda r: r[key]
    if isinstance(e, ir.Since):
        key, unit = e.access.key, float(e.unit_ms)

        def since(r: Record) -> float:
            t = r[key]
            return (r[NOW_KEY] - t) / unit if t > 0 else INF

        return since
    if isinstance(e, ir.Compare):
        left, right = e.left, e.right
        if isinstance(left, ir.Leaf) and isinstance(right, ir.Const):
            return _leaf_vs_const(e.op, left.access.key, right.value)
        if isinstance(left, ir.Const) and isinstance(right, ir.Leaf):
            return _leaf_vs_const(FLIPPED[e.op], right.access.key, left.value)
        fn, a, b = OPS[e.op], compile_expr(left), compile_expr(right)
        if isinstance(right, ir.Const):
            c = right.value
            return lambda r: fn(a(r), c)
        return lambda r: fn(a(r), b(r))
    if isinstance(e, ir.InSet):
        values = frozenset(e.values)
        if isinstance(e.operand, ir.Leaf):
            key = e.operand.access.key
            return lambda r: r[key] in values
        a = compile_expr(e.operand)
        return lambda r: a(r) in values
    if isinstance(e, ir.Arith):
        fn, a, b = OPS[e.op], compile_expr(e.left), compile_expr(e.right)
        return lambda r: fn(a(r), b(r))
    if isinstance(e, ir.Neg):
        a = compile_expr(e.operand)
        return lambda r: -a(r)
    if isinstance(e, ir.Not):
        a = compile_expr(e.operand)
        return lambda r: not a(r)
    if isinstance(e, ir.And | ir.Or):
        return _compile_junction(e)
    raise TypeError(f"cannot compile {e!r}")  # pragma: no cover


def _simple(e: ir.Expr) -> tuple[str, Callable[[Any, Any], bool], Any] | None:
    """(key, operator, constant) for `field op constant` and boolean fields; None otherwise."""
    if isinstance(e, ir.Compare):
        if isinstance(e.left, ir.Leaf) and isinstance(e.right, ir.Const):
            return e.left.access.key, OPS[e.op], e.right.value
        if isinstance(e.left, ir.Const) and isinstance(e.right, ir.Leaf):
            return e.right.access.key, OPS[FLIPPED[e.op]], e.left.value
    if isinstance(e, ir.Leaf) and e.type is ir.VT.BOOL:
        return e.access.key, operator.eq, True
    return None


def _compile_junction(e: ir.And | ir.Or) -> Fn:
    """and / or: the `field op constant` operands run first as a loop over (key, operator,
    constant) triples (no closure call each), then the others. Operands cannot fail or have
    side effects, so the order does not change the result."""
    triples = tuple(t for t in map(_simple, e.operands) if t is not None)
    rest = tuple(compile_expr(o) for o in e.operands if _simple(o) is None)
    if isinstance(e, ir.And):
        def all_of(r: Record) -> bool:
            for key, op, c in triples:
                if not op(r[key], c):
                    return False
            for f in rest:  # noqa: SIM110 - a plain loop beats all(<genexpr>) here
                if not f(r):
                    return False
            return True
        return all_of

    def any_of(r: Record) -> bool:
        for key, op, c in triples:
            if op(r[key], c):
                return True
        for f in rest:  # noqa: SIM110 - a plain loop beats any(<genexpr>) here
            if f(r):
                return True
        return False
    return any_of


def compile_predicate(e: ir.Expr) -> Callable[[Record], bool]:
    fn = compile_expr(e)
    if isinstance(e, ir.Leaf | ir.Const):
        return lambda r: bool(fn(r))
    return fn
