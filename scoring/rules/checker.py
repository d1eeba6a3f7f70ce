"""Type checker: syntax tree + schema -> typed tree (scoring.rules.ir), or RuleError at the culprit."""

from __future__ import annotations

import difflib

from scoring.rules import ir
from scoring.rules import nodes as n
from scoring.rules.errors import RuleError
from scoring.rules.ir import VT
from scoring.rules.schema import FieldType, Schema
from scoring.units import DAY_MS, HOUR_MS, MINUTE_MS

SCALAR_VT = {
    FieldType.NUMBER: VT.NUMBER,
    FieldType.TIMESTAMP: VT.NUMBER,
    FieldType.STRING: VT.STRING,
    FieldType.BOOL: VT.BOOL,
}
SINCE_UNITS_MS = {"days_since": DAY_MS, "hours_since": HOUR_MS, "minutes_since": MINUTE_MS}
FUNCTIONS = ("events", *SINCE_UNITS_MS, "has", "size")
MAX_LIST_ITEMS = 1000
MAX_LIST_INDEX = 1000


def _err(node: n.Node, message: str) -> RuleError:
    return RuleError(message, node.line, node.column)


def _describe(t: VT) -> str:
    return {VT.NUMBER: "a number", VT.STRING: "a string", VT.BOOL: "a boolean"}[t]


class Checker:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    # -- fields -----------------------------------------------------------
    def field_type(self, node: n.Name) -> FieldType:
        kind = self.schema.fields.get(node.path)
        if kind is None:
            close = difflib.get_close_matches(node.path, list(self.schema.fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise _err(node, f"unknown field {node.path!r}{hint}")
        return kind

    def check(self, node: n.Node) -> ir.Expr:
        expr = self.expr(node)
        if expr.type is not VT.BOOL:
            raise _err(node, f"a rule must be true or false, but this is {_describe(expr.type)}")
        return expr

    def expr(self, node: n.Node) -> ir.Expr:
        if isinstance(node, n.Literal):
            return self.literal(node)
        if isinstance(node, n.ListLiteral):
            raise _err(node, "a list can only stand on the right of in / not in")
        if isinstance(node, n.Name):
            kind = self.field_type(node)
            if not kind.is_scalar:
                raise _err(node, f"{node.path} is a {kind.value}; use it as {node.path}[...], "
                                 f"\"x\" in {node.path}, size({node.path}) or has({node.path})")
            t = SCALAR_VT[kind]
            return ir.Leaf(t, ir.Access("field", node.path, None, t))
        if isinstance(node, n.Index):
            return self.index(node)
        if isinstance(node, n.Call):
            return self.call(node)
        if isinstance(node, n.Unary):
            operand = self.expr(node.operand)
            if node.op == "not":
                self.need(node.operand, operand, VT.BOOL, "not")
                return ir.Not(VT.BOOL, operand)
            self.need(node.operand, operand, VT.NUMBER, "unary -")
            return ir.Neg(VT.NUMBER, operand)
        if isinstance(node, n.Logical):
            operands = []
            for o in node.operands:
                e = self.expr(o)
                self.need(o, e, VT.BOOL, node.op)
                operands.append(e)
            cls = ir.And if node.op == "and" else ir.Or
            return cls(VT.BOOL, tuple(operands))
        if isinstance(node, n.Binary):
            return self.binary(node)
        raise _err(node, "unsupported expression")  # pragma: no cover

    def need(self, node: n.Node, expr: ir.Expr, t: VT, op: str) -> None:
        if expr.type is not t:
            raise _err(node, f"{op} needs {_describe(t)} here, not {_describe(expr.type)}")

    def literal(self, node: n.Literal) -> ir.Const:
        v = node.value
        if isinstance(v, bool):
            return ir.Const(VT.BOOL, v)
        if isinstance(v, float):
            return ir.Const(VT.NUMBER, v)
        return ir.Const(VT.STRING, v)

    def index(self, node: n.Index) -> ir.Expr:
        if not isinstance(node.target, n.Name):
            raise _err(node, "only a map or list field can be indexed, e.g. traits[\"gender\"]")
        kind = self.field_type(node.target)
        idx = node.index
        if kind in (FieldType.NUMBER_MAP, FieldType.STRING_MAP):
            if not (isinstance(idx, n.Literal) and isinstance(idx.value, str)):
                raise _err(idx, f"the key of {node.target.path}[...] must be a string literal")
            t = VT.NUMBER if kind is FieldType.NUMBER_MAP else VT.STRING
            return ir.Leaf(t, ir.Access("key", node.target.path, idx.value, t))
        if kind is FieldType.STRING_LIST:
            value = idx.value if isinstance(idx, n.Literal) else None
            if not isinstance(value, float) or not value.is_integer() or not 0 <= value <= MAX_LIST_INDEX:
                raise _err(idx, f"the index of {node.target.path}[...] must be a whole number "
                                f"from 0 to {MAX_LIST_INDEX}")
            return ir.Leaf(VT.STRING, ir.Access("index", node.target.path, int(value), VT.STRING))
        raise _err(node, f"{node.target.path} is {kind.value}; only maps and lists can be indexed")

    def binary(self, node: n.Binary) -> ir.Expr:
        op = node.op
        if op in ("in", "not in"):
            expr = self.membership(node)
            return ir.Not(VT.BOOL, expr) if op == "not in" else expr
        left, right = self.expr(node.left), self.expr(node.right)
        if op in ("+", "-", "*"):
            self.need(node.left, left, VT.NUMBER, op)
            self.need(node.right, right, VT.NUMBER, op)
            return ir.Arith(VT.NUMBER, op, left, right)
        if op in ("==", "!="):
            if left.type is not right.type:
                raise _err(node, f"cannot compare {_describe(left.type)} with {_describe(right.type)}")
            return ir.Compare(VT.BOOL, op, left, right)
        self.need(node.left, left, VT.NUMBER, op)
        self.need(node.right, right, VT.NUMBER, op)
        return ir.Compare(VT.BOOL, op, left, right)

    def membership(self, node: n.Binary) -> ir.Expr:
        right = node.right
        if isinstance(right, n.ListLiteral):
            left = self.expr(node.left)
            if len(right.items) > MAX_LIST_ITEMS:
                raise _err(right, f"a list may hold at most {MAX_LIST_ITEMS} items")
            values = []
            for item in right.items:
                if not isinstance(item, n.Literal):
                    raise _err(item, "list items must be literals (strings, numbers or booleans)")
                const = self.literal(item)
                if const.type is not left.type:
                    raise _err(item, f"list item is {_describe(const.type)} but the left side of "
                                     f"{node.op} is {_describe(left.type)}")
                values.append(const.value)
            return ir.InSet(VT.BOOL, left, tuple(dict.fromkeys(values)))
        if isinstance(right, n.Name):
            kind = self.field_type(right)
            if kind in (FieldType.STRING_LIST, FieldType.NUMBER_MAP, FieldType.STRING_MAP):
                key = node.left
                if not (isinstance(key, n.Literal) and isinstance(key.value, str)):
                    raise _err(key, f"the left side of {node.op} {right.path} must be a string literal")
                return ir.Leaf(VT.BOOL, ir.Access("contains", right.path, key.value, VT.BOOL))
            raise _err(right, f"{right.path} is {kind.value}; in needs a list literal, a list field "
                              "or a map field on its right")
        raise _err(right, "in needs a list literal such as [\"a\", \"b\"], a list field or a map field "
                          "on its right")

    # -- functions --------------------------------------------------------
    def call(self, node: n.Call) -> ir.Expr:
        name = node.function
        if name == "events":
            return self.events(node)
        if name in SINCE_UNITS_MS:
            arg = self.one_field_arg(node)
            kind = self.field_type(arg)
            if kind is not FieldType.TIMESTAMP:
                raise _err(arg, f"{name}() needs a timestamp field (such as last_seen_ms), "
                                f"not {arg.path} ({kind.value})")
            return ir.Since(VT.NUMBER, ir.Access("field", arg.path, None, VT.NUMBER), SINCE_UNITS_MS[name])
        if name == "size":
            arg = self.one_field_arg(node)
            kind = self.field_type(arg)
            if kind.is_scalar:
                raise _err(arg, f"size() needs a list or map field, not {arg.path} ({kind.value})")
            return ir.Leaf(VT.NUMBER, ir.Access("size", arg.path, None, VT.NUMBER))
        if name == "has":
            if len(node.args) != 1 or node.kwargs:
                raise _err(node, "has() takes one field, e.g. has(customer_id) or has(traits[\"gender\"])")
            operand = node.args[0]
            if isinstance(operand, n.Index) and isinstance(operand.target, n.Name):
                kind = self.field_type(operand.target)
                if kind in (FieldType.NUMBER_MAP, FieldType.STRING_MAP):
                    leaf = self.index(operand)
                    assert isinstance(leaf, ir.Leaf)
                    return ir.Leaf(VT.BOOL, ir.Access("contains", operand.target.path, leaf.access.arg, VT.BOOL))
            if not isinstance(operand, n.Name):
                raise _err(operand, "has() takes a field or a map entry, e.g. has(traits[\"gender\"])")
            kind = self.field_type(operand)
            if not kind.is_scalar:
                size = ir.Leaf(VT.NUMBER, ir.Access("size", operand.path, None, VT.NUMBER))
                return ir.Compare(VT.BOOL, ">", size, ir.Const(VT.NUMBER, 0.0))
            t = SCALAR_VT[kind]
            leaf = ir.Leaf(t, ir.Access("field", operand.path, None, t))
            if t is VT.BOOL:
                return leaf
            empty = ir.Const(t, "" if t is VT.STRING else 0.0)
            return ir.Compare(VT.BOOL, "!=", leaf, empty)
        close = difflib.get_close_matches(name, FUNCTIONS, n=1)
        hint = f"did you mean {close[0]}()? " if close else ""
        raise _err(node, f"unknown function {name}(); {hint}known: {', '.join(f + '()' for f in FUNCTIONS)}")

    def one_field_arg(self, node: n.Call) -> n.Name:
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], n.Name):
            bad = node.args[0] if node.args else node
            raise _err(bad, f"{node.function}() takes exactly one field name")
        return node.args[0]

    def events(self, node: n.Call) -> ir.Expr:
        usage = 'events() takes an event type and a window, e.g. events("PURCHASE", days=30)'
        args = list(node.args)
        kwargs = dict(node.kwargs)
        for key, value in node.kwargs:
            if key != "days":
                raise _err(value, f"events() has no argument {key!r}; {usage}")
        if len(args) == 2 and "days" not in kwargs:
            kwargs["days"] = args.pop()
        if len(args) != 1 or "days" not in kwargs:
            raise _err(node, usage)
        kind_node, days_node = args[0], kwargs["days"]
        if not (isinstance(kind_node, n.Literal) and isinstance(kind_node.value, str)):
            raise _err(kind_node, f"the event type must be a string literal; {usage}")
        event = kind_node.value.upper()
        if event not in self.schema.event_types:
            known = ", ".join(sorted(self.schema.event_types))
            raise _err(kind_node, f"unknown event type {kind_node.value!r}; known: {known}")
        limit = self.schema.max_event_days
        days = days_node.value if isinstance(days_node, n.Literal) else None
        if not (isinstance(days, float) and days.is_integer() and 1 <= days <= limit):
            raise _err(days_node, f"days must be a whole number from 1 to {limit}")
        return ir.Leaf(VT.NUMBER, ir.Access("events", event, int(days), VT.NUMBER))


def check(tree: n.Node, schema: Schema) -> ir.Expr:
    return Checker(schema).check(tree)
