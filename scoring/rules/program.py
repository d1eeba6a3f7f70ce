"""Evaluate many checked rules at once for one shopper: one flat program, one Numba pass.

    program = compile_program([rule_a.expr, rule_b.expr, ...])
    features = program.features(numbers, strings)   # values of program.numbers / program.strings
    hits = program.matching(features, now_ms)       # indices of the outputs that are true
    # scoring.rules.wire.WireProgram: the features read from a serialized message, then the
    # program run, in one kernel call

Every distinct access the outputs read is one feature slot, read once per request by the
caller: numbers and booleans (1.0 / 0.0) first, then strings as integer codes of a symbol
table built from the rules' string constants. A string that is not in the table gets a
negative code of its own for that request, so equal strings get equal codes whatever they
are. Missing values need no flag: every access already has a defined value for a missing
field (0, "", false, see scoring.rules.plain), which the caller puts in the slot.

Structurally equal sub-expressions (the same `visit_count >= 2` in ten rules, a rule
reused inside an offer's targets) become one instruction, computed once. The kernel runs
the instructions in order over a float64 register file; `and`/`or` do not short-circuit,
which gives the same results because no operation can fail (see the README).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numba
import numpy as np

from scoring.rules import ir
from scoring.rules.ir import VT, Access

# Opcodes. An instruction is one row (op, dst, a, b, c) of int64 registers / operands.
EQ, NE, LT, LE, GT, GE, ADD, SUB, MUL, NEG, NOT, AND, OR, SINCE, IN, OUT = range(16)
_COMPARE = {"==": EQ, "!=": NE, "<": LT, "<=": LE, ">": GT, ">=": GE}
_ARITH = {"+": ADD, "-": SUB, "*": MUL}


# A 1-d `code` (rows of 5 flattened): numba's dispatcher types 2-d arguments much more slowly.
@numba.njit(cache=True, inline="always")
def _execute(code, consts, features, now):  # pragma: no cover - compiled
    """Registers: [features | consts | temporaries]; row 0 of `code` is (registers, outputs, 0, 0, 0)."""
    nf = features.shape[0]
    reg = np.empty(code[0], dtype=np.float64)
    reg[:nf] = features
    reg[nf:nf + consts.shape[0]] = consts
    return _evaluate(code, consts, reg, now)


@numba.njit(cache=True, inline="always")
def _evaluate(code, consts, reg, now):  # pragma: no cover - compiled
    """Run the program over `reg`, whose features and constants are filled (see _execute)."""
    out = np.empty(code[1], dtype=np.int64)
    hits = 0
    for row in range(5, code.shape[0], 5):
        op = code[row]
        dst = code[row + 1]
        x = reg[code[row + 2]]
        if op == OUT:  # output `dst` is true when x is, and now is in [reg[b], reg[c])
            if x != 0.0 and reg[code[row + 3]] <= now < reg[code[row + 4]]:
                out[hits] = dst
                hits += 1
            continue
        if op == NOT:
            reg[dst] = 1.0 if x == 0.0 else 0.0
        elif op == NEG:
            reg[dst] = -x
        elif op == SINCE:  # (now - t) / unit_ms; +inf when the timestamp is unset
            reg[dst] = (now - x) / code[row + 3] if x > 0.0 else np.inf
        elif op == IN:
            found = 0.0
            for j in range(code[row + 3], code[row + 3] + code[row + 4]):
                if x == consts[j]:
                    found = 1.0
                    break
            reg[dst] = found
        else:
            y = reg[code[row + 3]]
            if op == AND:
                reg[dst] = 1.0 if x != 0.0 and y != 0.0 else 0.0
            elif op == OR:
                reg[dst] = 1.0 if x != 0.0 or y != 0.0 else 0.0
            elif op == EQ:
                reg[dst] = 1.0 if x == y else 0.0
            elif op == NE:
                reg[dst] = 1.0 if x != y else 0.0
            elif op == LT:
                reg[dst] = 1.0 if x < y else 0.0
            elif op == LE:
                reg[dst] = 1.0 if x <= y else 0.0
            elif op == GT:
                reg[dst] = 1.0 if x > y else 0.0
            elif op == GE:
                reg[dst] = 1.0 if x >= y else 0.0
            elif op == ADD:
                reg[dst] = x + y
            elif op == SUB:
                reg[dst] = x - y
            else:
                reg[dst] = x * y
    return out[:hits]


_I64S = numba.int64[::1]
_F64S = numba.float64[::1]


# No nogil: releasing the GIL for a few microseconds of work costs more than it frees, and lets
# another thread (gRPC's) take the GIL mid-request.
@numba.njit(_I64S(_I64S, _F64S, _F64S, numba.float64), cache=True)
def _run(code, consts, features, now):  # pragma: no cover - compiled
    return _execute(code, consts, features, now)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """Compiled outputs over a feature vector; build with compile_program()."""

    numbers: tuple[Access, ...]       # feature slots 0 .. len(numbers)-1 (numbers and booleans)
    strings: tuple[Access, ...]       # the following slots, as symbol codes
    symbols: dict[str, int]           # string constant -> code (>= 0)
    code: np.ndarray                  # int64 rows (op, dst, a, b, c), flattened; see _run
    consts: np.ndarray                # float64 constants, then the value lists of `in`
    outputs: int
    compare_strings: bool             # some rule compares two string fields: unknowns need distinct codes

    def encode(self, strings: Sequence[str]) -> list[int]:
        """Symbol codes of string values; unknown ones get -1, -2, ... (one per distinct value)."""
        get = self.symbols.get
        if not self.compare_strings:
            return [get(s, -1) for s in strings]
        codes = list(map(get, strings))
        if None in codes:
            unknown: dict[str, int] = {}
            codes = [unknown.setdefault(s, -1 - len(unknown)) if k is None else k
                     for k, s in zip(codes, strings, strict=True)]
        return codes  # type: ignore[return-value]

    def features(self, numbers: Sequence[float | bool], strings: Sequence[str]) -> np.ndarray:
        """The feature vector from the values of `self.numbers` and `self.strings`, in that order."""
        if len(numbers) != len(self.numbers) or len(strings) != len(self.strings):
            raise ValueError(f"expected {len(self.numbers)} numbers and {len(self.strings)} strings, "
                             f"got {len(numbers)} and {len(strings)}")
        return np.array([*numbers, *self.encode(strings)], dtype=np.float64)

    def matching(self, features: np.ndarray, now_ms: int) -> np.ndarray:
        """Indices of the outputs that are true, ascending (int64)."""
        if features.shape[0] != len(self.numbers) + len(self.strings):  # the kernel would misplace the constants
            raise ValueError(f"expected {len(self.numbers) + len(self.strings)} features, got {features.shape[0]}")
        return _run(self.code, self.consts, features, float(now_ms))


class _Builder:
    """Post-order walk emitting one instruction per distinct node. Operands are symbolic
    ("f" feature, "c" constant, "t" temporary) until every constant is known."""

    def __init__(self, slots: dict[Access, int]) -> None:
        self.slots = slots
        self.symbols: dict[str, int] = {"": 0}
        self.consts: list[float] = []
        self.const_index: dict[tuple[VT, object], int] = {}
        self.pools: list[tuple[float, ...]] = []
        self.rows: list[tuple[int, tuple[str, int], tuple[str, int], object, object]] = []
        self.memo: dict[ir.Expr, tuple[str, int]] = {}
        self.temps = 0
        self.compare_strings = False

    def number(self, t: VT, value: object) -> float:
        if t is VT.STRING:
            return float(self.symbols.setdefault(value, len(self.symbols)))  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]

    def const(self, t: VT, value: object) -> tuple[str, int]:
        key = (t, value)
        if key not in self.const_index:
            self.const_index[key] = len(self.consts)
            self.consts.append(self.number(t, value))
        return "c", self.const_index[key]

    def emit(self, op: int, a: tuple[str, int], b: object = 0, c: object = 0) -> tuple[str, int]:
        dst = ("t", self.temps)
        self.temps += 1
        self.rows.append((op, dst, a, b, c))
        return dst

    def reg(self, e: ir.Expr) -> tuple[str, int]:
        found = self.memo.get(e)
        if found is None:
            found = self.memo[e] = self._reg(e)
        return found

    def _reg(self, e: ir.Expr) -> tuple[str, int]:
        if isinstance(e, ir.Const):
            return self.const(e.type, e.value)
        if isinstance(e, ir.Leaf):
            return "f", self.slots[e.access]
        if isinstance(e, ir.Since):
            return self.emit(SINCE, ("f", self.slots[e.access]), e.unit_ms)
        if isinstance(e, ir.Compare):
            if e.left.type is VT.STRING and not isinstance(e.left, ir.Const) and not isinstance(e.right, ir.Const):
                self.compare_strings = True
            return self.emit(_COMPARE[e.op], self.reg(e.left), self.reg(e.right))
        if isinstance(e, ir.Arith):
            return self.emit(_ARITH[e.op], self.reg(e.left), self.reg(e.right))
        if isinstance(e, ir.InSet):
            pool = tuple(self.number(e.operand.type, v) for v in e.values)
            self.pools.append(pool)
            return self.emit(IN, self.reg(e.operand), ("pool", len(self.pools) - 1), len(pool))
        if isinstance(e, ir.Neg):
            return self.emit(NEG, self.reg(e.operand))
        if isinstance(e, ir.Not):
            return self.emit(NOT, self.reg(e.operand))
        if isinstance(e, ir.And | ir.Or):
            op = AND if isinstance(e, ir.And) else OR
            acc = self.reg(e.operands[0])
            for operand in e.operands[1:]:
                acc = self.emit(op, acc, self.reg(operand))
            return acc
        raise TypeError(f"cannot compile {e!r}")  # pragma: no cover


def _by_level(rows: list[tuple[int, tuple[str, int], tuple[str, int], object, object]]
              ) -> list[tuple[int, tuple[str, int], tuple[str, int], object, object]]:
    """Rows in dependency levels, each level grouped by opcode: the kernel then meets runs of one
    opcode (ten `>=` in a row, then the `and`s), which the CPU's branch predictor follows, instead
    of a new opcode at every row. A row's level is one more than the deepest row it reads."""
    level: dict[int, int] = {}
    keyed = []
    for position, row in enumerate(rows):
        op, dst, a, b, _ = row
        depth = 1 + max((level[x[1]] for x in (a, b) if isinstance(x, tuple) and x[0] == "t"), default=0)
        level[dst[1]] = depth
        keyed.append((depth, op, position, row))
    keyed.sort()
    return [row for *_, row in keyed]


def compile_program(outputs: Sequence[ir.Expr], accesses: Sequence[Access] = (),
                    windows: Sequence[tuple[float, float]] = ()) -> Program:
    """Compile boolean expressions (checked rules) into one program; output i is outputs[i].

    `accesses` is the caller's preferred slot order (say, grouped the way it reads them);
    accesses the outputs read but `accesses` omits follow it. Numbers and booleans come
    before strings, each group in that order. `windows[i] = (start, end)` makes output i
    true only while start <= now_ms < end (offers with a schedule); by default always.
    """
    for e in outputs:
        if e.type is not VT.BOOL:
            raise ValueError(f"outputs must be boolean, not {e.type.value}")
    windows = list(windows) or [(-np.inf, np.inf)] * len(outputs)
    if len(windows) != len(outputs):
        raise ValueError(f"{len(windows)} windows for {len(outputs)} outputs")
    order = dict.fromkeys(accesses)
    for e in outputs:
        order.update(dict.fromkeys(ir.accesses(e)))
    numbers = tuple(a for a in order if a.type is not VT.STRING)
    strings = tuple(a for a in order if a.type is VT.STRING)
    slots = {a: i for i, a in enumerate(numbers + strings)}
    builder = _Builder(slots)
    results = [builder.reg(e) for e in outputs]
    bounds = [(builder.const(VT.NUMBER, float(lo)), builder.const(VT.NUMBER, float(hi))) for lo, hi in windows]

    # Lay out the registers and the constant pool, then resolve the symbolic operands.
    nf = len(slots)
    consts = list(builder.consts)
    pool_start = []
    for pool in builder.pools:
        pool_start.append(len(consts))
        consts.extend(pool)
    base = {"f": 0, "c": nf, "t": nf + len(consts)}

    def resolve(operand: object) -> int:
        if isinstance(operand, tuple):
            kind, index = operand
            return pool_start[index] if kind == "pool" else base[kind] + index
        return int(operand)  # type: ignore[call-overload]

    rows = [(nf + len(consts) + builder.temps, len(outputs), 0, 0, 0)]
    rows += [(op, resolve(dst), resolve(a), resolve(b), resolve(c)) for op, dst, a, b, c in _by_level(builder.rows)]
    rows += [(OUT, i, resolve(r), resolve(lo), resolve(hi))
             for i, (r, (lo, hi)) in enumerate(zip(results, bounds, strict=True))]
    return Program(
        numbers=numbers, strings=strings, symbols=builder.symbols,
        code=np.array(rows, dtype=np.int64).ravel(), consts=np.array(consts, dtype=np.float64),
        outputs=len(outputs), compare_strings=builder.compare_strings,
    )
