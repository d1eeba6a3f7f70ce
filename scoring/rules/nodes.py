"""Syntax tree of a parsed rule, before type checking. Every node keeps its position."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Node:
    line: int
    column: int


@dataclasses.dataclass(frozen=True)
class Literal(Node):
    value: object  # float, str or bool


@dataclasses.dataclass(frozen=True)
class ListLiteral(Node):
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Name(Node):
    """A dotted field name: `visit_count`, `rfm.r_score`, `context.utm.campaign`."""

    path: str


@dataclasses.dataclass(frozen=True)
class Index(Node):
    """`target[index]`: a map entry or a list element."""

    target: Node
    index: Node


@dataclasses.dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]
    kwargs: tuple[tuple[str, Node], ...]


@dataclasses.dataclass(frozen=True)
class Unary(Node):
    op: str  # "not" or "-"
    operand: Node


@dataclasses.dataclass(frozen=True)
class Binary(Node):
    """Comparisons (== != < <= > >= in, "not in"), arithmetic (+ - *)."""

    op: str
    left: Node
    right: Node


@dataclasses.dataclass(frozen=True)
class Logical(Node):
    op: str  # "and" or "or"
    operands: tuple[Node, ...]
