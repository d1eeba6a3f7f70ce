"""A slow, obvious interpreter that walks the *syntax tree* over plain nested data.

It shares no code with the checker, compiler or vectorized evaluator beyond the syntax
tree, so tests can check that all three agree on random rules and profiles. It assumes
the rule passed the type checker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scoring.rules import nodes as n
from scoring.rules.schema import FieldType, Schema
from scoring.units import DAY_MS, HOUR_MS, MINUTE_MS

UNITS_MS = {"days_since": DAY_MS, "hours_since": HOUR_MS, "minutes_since": MINUTE_MS}


def _get(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _field(data: Mapping[str, Any], schema: Schema, path: str) -> Any:
    kind = schema.fields[path]
    value = _get(data, path)
    if kind in (FieldType.NUMBER, FieldType.TIMESTAMP):
        return float(value or 0)
    if kind is FieldType.STRING:
        return value or ""
    if kind is FieldType.BOOL:
        return bool(value)
    if kind is FieldType.STRING_LIST:
        return list(value or [])
    return dict(value or {})


def _value(node: n.Node) -> Any:
    """A literal's value: the checker lets only literals stand where this is asked."""
    assert isinstance(node, n.Literal), node
    return node.value


def _path(node: n.Node) -> str:
    assert isinstance(node, n.Name), node
    return node.path


def interpret(tree: n.Node, data: Mapping[str, Any], schema: Schema, now_ms: int) -> Any:
    def ev(node: n.Node) -> Any:
        if isinstance(node, n.Literal):
            return node.value
        if isinstance(node, n.Name):
            return _field(data, schema, node.path)
        if isinstance(node, n.Index):
            container = ev(node.target)
            key = _value(node.index)
            if isinstance(container, list):
                i = int(key)
                return container[i] if i < len(container) else ""
            default = 0.0 if schema.fields[_path(node.target)] is FieldType.NUMBER_MAP else ""
            value = container.get(key, default)
            return float(value) if isinstance(default, float) else value
        if isinstance(node, n.Unary):
            return (not ev(node.operand)) if node.op == "not" else -ev(node.operand)
        if isinstance(node, n.Logical):
            values = [bool(ev(o)) for o in node.operands]
            return all(values) if node.op == "and" else any(values)
        if isinstance(node, n.Binary):
            if node.op in ("in", "not in"):
                right = node.right
                container = [_value(i) for i in right.items] if isinstance(right, n.ListLiteral) else ev(right)
                found = ev(node.left) in container
                return found if node.op == "in" else not found
            a, b = ev(node.left), ev(node.right)
            return {
                "==": lambda: a == b, "!=": lambda: a != b, "<": lambda: a < b, "<=": lambda: a <= b,
                ">": lambda: a > b, ">=": lambda: a >= b, "+": lambda: a + b, "-": lambda: a - b,
                "*": lambda: a * b,
            }[node.op]()
        if isinstance(node, n.Call):
            return call(node)
        raise TypeError(node)

    def call(node: n.Call) -> Any:
        if node.function == "events":
            args = [*node.args, *(v for _, v in node.kwargs)]
            event = str(_value(args[0])).upper()
            days = int(_value(args[1]))
            today = now_ms // DAY_MS
            total = 0
            for day, kind, count in data.get("daily_events") or ():
                if kind == event and today - days < day <= today:
                    total += count
            return float(total)
        if node.function in UNITS_MS:
            t = ev(node.args[0])
            return (now_ms - t) / UNITS_MS[node.function] if t > 0 else math.inf
        if node.function == "size":
            return float(len(ev(node.args[0])))
        if node.function == "has":
            arg = node.args[0]
            if isinstance(arg, n.Index):
                return _value(arg.index) in ev(arg.target)
            value = ev(arg)
            return bool(value)
        raise TypeError(node.function)

    return ev(tree)
