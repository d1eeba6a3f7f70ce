"""Evaluate a checked rule over whole columns at once (NumPy), for segment sizing.

A `ColumnBatch` holds one column per access of the rule: float64 for numbers, bool for
booleans and int32 codes for strings. All string columns of a batch share one
vocabulary, so string equality and `in` become integer comparisons and memory stays
bounded whatever the strings' lengths. The evaluator walks the typed tree once per
batch; every node is one NumPy operation over all rows, never a Python loop over profiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from scoring.rules import ir
from scoring.rules.ir import VT

NUMPY_OPS = {
    "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
    ">": np.greater, ">=": np.greater_equal, "+": np.add, "-": np.subtract, "*": np.multiply,
}


@dataclasses.dataclass
class ColumnBatch:
    size: int
    columns: dict[str, np.ndarray]
    vocab: dict[str, int]


class ColumnBuilder:
    """Collects rows of access values (one tuple per profile) into typed columns."""

    def __init__(self, accesses: Sequence[ir.Access], vocab: dict[str, int] | None = None) -> None:
        self.accesses = tuple(accesses)
        self.vocab: dict[str, int] = {} if vocab is None else vocab
        self.values: list[list[Any]] = [[] for _ in self.accesses]
        self.size = 0

    def append(self, row: Sequence[Any]) -> None:
        for column, value in zip(self.values, row, strict=True):
            column.append(value)
        self.size += 1

    def finish(self) -> ColumnBatch:
        columns: dict[str, np.ndarray] = {}
        for access, values in zip(self.accesses, self.values, strict=True):
            columns[access.key] = to_column(values, access.type, self.vocab)
        batch = ColumnBatch(self.size, columns, self.vocab)
        self.values = [[] for _ in self.accesses]
        self.size = 0
        return batch


def to_column(values: Iterable[Any], t: VT, vocab: dict[str, int]) -> np.ndarray:
    if t is VT.NUMBER:
        return np.fromiter(values, dtype=np.float64)
    if t is VT.BOOL:
        return np.fromiter(values, dtype=np.bool_)
    setdefault = vocab.setdefault
    return np.fromiter((setdefault(v, len(vocab)) for v in values), dtype=np.int32)


class _Str:
    """A string constant, turned into a code only when compared with a string column."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value


def _code(vocab: Mapping[str, int], v: Any) -> Any:
    return vocab.get(v.value, -1) if isinstance(v, _Str) else v


def evaluate(expr: ir.Expr, batch: ColumnBatch, now_ms: int) -> np.ndarray:
    """Boolean mask: which rows of `batch` the rule matches."""
    with np.errstate(all="ignore"):
        out = _eval(expr, batch, now_ms)
    if isinstance(out, np.ndarray):
        return out.astype(np.bool_, copy=False)
    return np.full(batch.size, bool(out), dtype=np.bool_)


def _eval(e: ir.Expr, b: ColumnBatch, now_ms: int) -> Any:
    if isinstance(e, ir.Const):
        return _Str(e.value) if e.type is VT.STRING else e.value  # type: ignore[arg-type]
    if isinstance(e, ir.Leaf):
        return b.columns[e.access.key]
    if isinstance(e, ir.Since):
        t = b.columns[e.access.key]
        return np.where(t > 0, (now_ms - t) / float(e.unit_ms), np.inf)
    if isinstance(e, ir.Compare):
        left, right = _eval(e.left, b, now_ms), _eval(e.right, b, now_ms)
        if isinstance(left, _Str) and isinstance(right, _Str):
            return NUMPY_OPS[e.op](left.value, right.value).item()
        return NUMPY_OPS[e.op](_code(b.vocab, left), _code(b.vocab, right))
    if isinstance(e, ir.InSet):
        x = _eval(e.operand, b, now_ms)
        if isinstance(x, _Str):
            return x.value in e.values
        if not isinstance(x, np.ndarray):
            return x in frozenset(e.values)
        if e.operand.type is VT.STRING:
            codes = [b.vocab[v] for v in e.values if v in b.vocab]
            return np.isin(x, np.array(codes, dtype=np.int32))
        return np.isin(x, np.array(e.values, dtype=x.dtype))
    if isinstance(e, ir.Arith):
        return NUMPY_OPS[e.op](_eval(e.left, b, now_ms), _eval(e.right, b, now_ms))
    if isinstance(e, ir.Neg):
        return np.negative(_eval(e.operand, b, now_ms))
    if isinstance(e, ir.Not):
        return np.logical_not(_eval(e.operand, b, now_ms))
    if isinstance(e, ir.And | ir.Or):
        combine = np.logical_and if isinstance(e, ir.And) else np.logical_or
        acc = _eval(e.operands[0], b, now_ms)
        for o in e.operands[1:]:
            acc = combine(acc, _eval(o, b, now_ms))
        return acc
    raise TypeError(f"cannot evaluate {e!r}")  # pragma: no cover
