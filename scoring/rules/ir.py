"""Typed rule tree after checking: what the compiler, the vectorized evaluator and the reference share.

Leaves read an `Access`: one scalar value per profile, named by a stable string key.
The caller resolves each access for one profile (a feature slot of a program) or for a
batch of profiles (a column). Every access yields a number (float), a string or a bool.
"""

from __future__ import annotations

import dataclasses
import enum
import functools


class VT(enum.Enum):
    """Value types inside a checked rule."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"



@dataclasses.dataclass(frozen=True)
class Access:
    """One scalar read from a profile.

    kind:
      field    -- a scalar field: `visit_count`, `context.country` (timestamps are numbers)
      key      -- a map entry: `category_affinity["running"]` (missing key: 0 or "")
      index    -- a list element: `recently_viewed[0]` (out of range: "")
      contains -- `"p1" in purchased_product_ids` (list) or `"running" in category_affinity` (map key)
      size     -- number of elements of a list or map
      events   -- `events("PURCHASE", days=30)`: events of that type on the last `days` UTC days
    """

    kind: str
    field: str
    arg: str | int | None
    type: VT

    @functools.cached_property
    def key(self) -> str:
        if self.kind == "field":
            return self.field
        if self.kind == "key":
            return f"{self.field}[{self.arg!r}]"
        if self.kind == "index":
            return f"{self.field}[{self.arg}]"
        if self.kind == "events":
            return f"events({self.field!r},{self.arg})"
        return f"{self.kind}({self.field}{'' if self.arg is None else ',' + repr(self.arg)})"


@dataclasses.dataclass(frozen=True)
class Expr:
    type: VT


@dataclasses.dataclass(frozen=True)
class Const(Expr):
    value: object  # float, str or bool


@dataclasses.dataclass(frozen=True)
class Leaf(Expr):
    access: Access


@dataclasses.dataclass(frozen=True)
class Since(Expr):
    """Time since a timestamp field, in units of `unit_ms`; +inf when the timestamp is unset (<= 0)."""

    access: Access
    unit_ms: int


@dataclasses.dataclass(frozen=True)
class Compare(Expr):
    op: str  # == != < <= > >=
    left: Expr
    right: Expr


@dataclasses.dataclass(frozen=True)
class InSet(Expr):
    operand: Expr
    values: tuple[object, ...]


@dataclasses.dataclass(frozen=True)
class Arith(Expr):
    op: str  # + - *
    left: Expr
    right: Expr


@dataclasses.dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


@dataclasses.dataclass(frozen=True)
class Not(Expr):
    operand: Expr


@dataclasses.dataclass(frozen=True)
class And(Expr):
    operands: tuple[Expr, ...]


@dataclasses.dataclass(frozen=True)
class Or(Expr):
    operands: tuple[Expr, ...]


def accesses(expr: Expr) -> list[Access]:
    """Every access the expression reads, each once, in first-use order."""
    seen: dict[str, Access] = {}

    def walk(e: Expr) -> None:
        if isinstance(e, Leaf | Since):
            seen.setdefault(e.access.key, e.access)
        elif isinstance(e, Compare | Arith):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, InSet | Neg | Not):
            walk(e.operand)
        elif isinstance(e, And | Or):
            for o in e.operands:
                walk(o)

    walk(expr)
    return list(seen.values())
