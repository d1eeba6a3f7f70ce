"""The segment rule language: parse, type-check and compile boolean rules over profile fields.

    rule = compile_rule('visit_count >= 3 and context.device_type == "mobile"', schema)
    program = compile_program([rule.expr, ...])  # one profile, many rules: one pass (program.py)
    rule.evaluate_columns(batch, now_ms)         # many profiles, one rule: NumPy columns (vector.py)

Pure Python and NumPy: no grpc, no service imports. See services/segmentation/README.md
for the grammar and semantics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scoring.rules import ir, vector
from scoring.rules.checker import check
from scoring.rules.errors import RuleError
from scoring.rules.ir import VT, Access
from scoring.rules.nodes import Node
from scoring.rules.parser import parse
from scoring.rules.program import Program, compile_program
from scoring.rules.schema import FieldType, Schema
from scoring.rules.vector import ColumnBatch, ColumnBuilder

__all__ = [
    "VT", "Access", "ColumnBatch", "ColumnBuilder", "CompiledRule", "FieldType", "Program",
    "RuleError", "Schema", "compile_program", "compile_rule",
]


@dataclasses.dataclass(frozen=True)
class CompiledRule:
    source: str
    tree: Node
    expr: ir.Expr
    accesses: tuple[Access, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """Schema fields the rule reads (for ValidateRule and docs)."""
        names = (a.field if a.kind != "events" else "daily_events" for a in self.accesses)
        return tuple(dict.fromkeys(names))

    def evaluate_columns(self, batch: ColumnBatch, now_ms: int) -> np.ndarray:
        return vector.evaluate(self.expr, batch, now_ms)


def compile_rule(source: str, schema: Schema) -> CompiledRule:
    """Parse, check and compile `source`; raises RuleError (with line and column) when it is wrong."""
    tree = parse(source)
    expr = check(tree, schema)
    return CompiledRule(source, tree, expr, tuple(ir.accesses(expr)))
