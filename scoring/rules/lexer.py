"""Tokens of the rule language, each with its 1-based line and column."""

from __future__ import annotations

import dataclasses
import enum

from scoring.rules.errors import RuleError


class Tok(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    IDENT = "identifier"
    KEYWORD = "keyword"
    OP = "operator"
    EOF = "end of rule"


KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
# Longest first, so "<=" wins over "<".
OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "(", ")", "[", "]", ",", ".", "=")
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclasses.dataclass(frozen=True)
class Token:
    kind: Tok
    text: str
    value: object
    line: int
    column: int

    def describe(self) -> str:
        return "end of rule" if self.kind is Tok.EOF else repr(self.text)


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i, line, line_start, n = 0, 1, 0, len(source)
    while i < n:
        ch = source[i]
        column = i - line_start + 1
        if ch == "\n":
            i += 1
            line, line_start = line + 1, i
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":  # comment to the end of the line
            while i < n and source[i] != "\n":
                i += 1
            continue
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            j = i + 1
            while j < n and source[j].isascii() and (source[j].isalnum() or source[j] == "_"):
                j += 1
            word = source[i:j]
            kind = Tok.KEYWORD if word in KEYWORDS else Tok.IDENT
            tokens.append(Token(kind, word, word, line, column))
            i = j
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and source[i + 1].isdigit()):
            j = i
            while j < n and source[j].isdigit():
                j += 1
            if j < n and source[j] == "." and j + 1 < n and source[j + 1].isdigit():
                j += 1
                while j < n and source[j].isdigit():
                    j += 1
            if j < n and source[j] in "eE":
                k = j + 1
                if k < n and source[k] in "+-":
                    k += 1
                if k < n and source[k].isdigit():
                    j = k
                    while j < n and source[j].isdigit():
                        j += 1
            if j < n and (source[j].isalpha() or source[j] == "_"):
                raise RuleError(f"malformed number {source[i:j + 1]!r}", line, column)
            text = source[i:j]
            tokens.append(Token(Tok.NUMBER, text, float(text), line, column))
            i = j
            continue
        if ch in "\"'":
            quote, j, chars = ch, i + 1, []
            while True:
                if j >= n or source[j] == "\n":
                    raise RuleError("unterminated string; close it with " + quote, line, column)
                c = source[j]
                if c == quote:
                    break
                if c == "\\":
                    if j + 1 >= n or source[j + 1] not in ESCAPES:
                        raise RuleError("unknown escape in string; use \\\" \\' \\\\ \\n or \\t",
                                        line, j - line_start + 1)
                    chars.append(ESCAPES[source[j + 1]])
                    j += 2
                    continue
                chars.append(c)
                j += 1
            tokens.append(Token(Tok.STRING, source[i:j + 1], "".join(chars), line, column))
            i = j + 1
            continue
        for op in OPERATORS:
            if source.startswith(op, i):
                tokens.append(Token(Tok.OP, op, op, line, column))
                i += len(op)
                break
        else:
            hint = " (use and / or / not)" if ch in "&|!" else ""
            raise RuleError(f"unexpected character {ch!r}{hint}", line, column)
    tokens.append(Token(Tok.EOF, "", None, line, i - line_start + 1))
    return tokens
