"""The one error the rule language raises: what is wrong, and where (1-based line and column)."""

from __future__ import annotations


class RuleError(ValueError):
    """A rule that does not parse, names an unknown field, mixes types or calls an unknown function."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.reason = message
        self.line = line
        self.column = column
