"""Recursive-descent parser: rule text -> syntax tree (scoring.rules.nodes), with positions.

Grammar (lowest precedence first):

    rule       := or_expr EOF
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") sum]
    sum        := product (("+" | "-") product)*
    product    := unary ("*" unary)*
    unary      := "-" unary | postfix
    postfix    := primary ("[" or_expr "]")*
    primary    := NUMBER | STRING | "true" | "false" | list | "(" or_expr ")"
                | IDENT ("." IDENT)*                      -- a field
                | IDENT "(" [arg ("," arg)*] ")"          -- a function call
    arg        := IDENT "=" or_expr | or_expr
    list       := "[" [or_expr ("," or_expr)* [","]] "]"

Comparisons do not chain (`1 < x < 3` is refused: write `1 < x and x < 3`).
"""

from __future__ import annotations

from scoring.rules import nodes as n
from scoring.rules.errors import RuleError
from scoring.rules.lexer import Tok, Token, tokenize

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
MAX_DEPTH = 64          # nesting of parentheses / operators
MAX_RULE_CHARS = 8192


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind is not Tok.EOF:
            self.pos += 1
        return tok

    def at(self, kind: Tok, text: str | None = None) -> bool:
        tok = self.tok
        return tok.kind is kind and (text is None or tok.text == text)

    def expect(self, kind: Tok, text: str, what: str) -> Token:
        if not self.at(kind, text):
            raise self.error(f"expected {what}, found {self.tok.describe()}")
        return self.advance()

    def error(self, message: str, tok: Token | None = None) -> RuleError:
        tok = tok or self.tok
        return RuleError(message, tok.line, tok.column)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"rule nested deeper than {MAX_DEPTH} levels")

    # rule := or_expr EOF
    def rule(self) -> n.Node:
        if self.at(Tok.EOF):
            raise self.error("empty rule; write a condition such as visit_count >= 2")
        node = self.or_expr()
        if not self.at(Tok.EOF):
            raise self.error(f"unexpected {self.tok.describe()}; expected and, or or the end of the rule")
        return node

    def or_expr(self) -> n.Node:
        self.enter()
        first = self.tok
        operands = [self.and_expr()]
        while self.at(Tok.KEYWORD, "or"):
            self.advance()
            operands.append(self.and_expr())
        self.depth -= 1
        return operands[0] if len(operands) == 1 else n.Logical(first.line, first.column, "or", tuple(operands))

    def and_expr(self) -> n.Node:
        first = self.tok
        operands = [self.not_expr()]
        while self.at(Tok.KEYWORD, "and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else n.Logical(first.line, first.column, "and", tuple(operands))

    def not_expr(self) -> n.Node:
        if self.at(Tok.KEYWORD, "not"):
            tok = self.advance()
            self.enter()
            operand = self.not_expr()
            self.depth -= 1
            return n.Unary(tok.line, tok.column, "not", operand)
        return self.comparison()

    def comparison(self) -> n.Node:
        left = self.sum()
        tok = self.tok
        op = None
        if tok.kind is Tok.OP and tok.text in COMPARISONS:
            op = tok.text
            self.advance()
        elif self.at(Tok.KEYWORD, "in"):
            op = "in"
            self.advance()
        elif self.at(Tok.KEYWORD, "not") and self.tokens[self.pos + 1].text == "in":
            op = "not in"
            self.advance()
            self.advance()
        if op is None:
            return left
        right = self.sum()
        after = self.tok
        if (after.kind is Tok.OP and after.text in COMPARISONS) or self.at(Tok.KEYWORD, "in"):
            raise self.error("comparisons do not chain; join them with and", after)
        return n.Binary(tok.line, tok.column, op, left, right)

    def sum(self) -> n.Node:
        left = self.product()
        while self.tok.kind is Tok.OP and self.tok.text in ("+", "-"):
            tok = self.advance()
            left = n.Binary(tok.line, tok.column, tok.text, left, self.product())
        return left

    def product(self) -> n.Node:
        left = self.unary()
        while self.at(Tok.OP, "*"):
            tok = self.advance()
            left = n.Binary(tok.line, tok.column, "*", left, self.unary())
        return left

    def unary(self) -> n.Node:
        if self.at(Tok.OP, "-"):
            tok = self.advance()
            self.enter()
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, n.Literal) and isinstance(operand.value, float):
                return n.Literal(tok.line, tok.column, -operand.value)
            return n.Unary(tok.line, tok.column, "-", operand)
        return self.postfix()

    def postfix(self) -> n.Node:
        node = self.primary()
        while self.at(Tok.OP, "["):
            tok = self.advance()
            self.enter()
            index = self.or_expr()
            self.depth -= 1
            self.expect(Tok.OP, "]", "] to close the index")
            node = n.Index(tok.line, tok.column, node, index)
        return node

    def primary(self) -> n.Node:
        tok = self.tok
        if tok.kind is Tok.NUMBER or tok.kind is Tok.STRING:
            self.advance()
            return n.Literal(tok.line, tok.column, tok.value)
        if tok.kind is Tok.KEYWORD and tok.text in ("true", "false"):
            self.advance()
            return n.Literal(tok.line, tok.column, tok.text == "true")
        if self.at(Tok.OP, "("):
            self.advance()
            node = self.or_expr()
            self.expect(Tok.OP, ")", ") to close the parenthesis")
            return node
        if self.at(Tok.OP, "["):
            return self.list_literal()
        if tok.kind is Tok.IDENT:
            self.advance()
            if self.at(Tok.OP, "("):
                return self.call(tok)
            parts = [tok.text]
            while self.at(Tok.OP, "."):
                self.advance()
                if not self.at(Tok.IDENT):
                    raise self.error(f"expected a field name after '.', found {self.tok.describe()}")
                parts.append(self.advance().text)
            return n.Name(tok.line, tok.column, ".".join(parts))
        if tok.kind is Tok.EOF:
            raise self.error("rule ends too early; expected a value")
        raise self.error(f"unexpected {tok.describe()}; expected a field, a literal or (")

    def list_literal(self) -> n.Node:
        start = self.advance()
        items: list[n.Node] = []
        self.enter()
        while not self.at(Tok.OP, "]"):
            items.append(self.or_expr())
            if self.at(Tok.OP, ","):
                self.advance()
            elif not self.at(Tok.OP, "]"):
                raise self.error(f"expected , or ] in the list, found {self.tok.describe()}")
        self.advance()
        self.depth -= 1
        return n.ListLiteral(start.line, start.column, tuple(items))

    def call(self, name: Token) -> n.Node:
        self.advance()  # (
        args: list[n.Node] = []
        kwargs: list[tuple[str, n.Node]] = []
        self.enter()
        while not self.at(Tok.OP, ")"):
            if self.at(Tok.IDENT) and self.tokens[self.pos + 1].text == "=" \
                    and self.tokens[self.pos + 1].kind is Tok.OP:
                key = self.advance()
                self.advance()
                if any(k == key.text for k, _ in kwargs):
                    raise self.error(f"argument {key.text!r} given twice", key)
                kwargs.append((key.text, self.or_expr()))
            else:
                if kwargs:
                    raise self.error("positional argument after a keyword argument")
                args.append(self.or_expr())
            if self.at(Tok.OP, ","):
                self.advance()
            elif not self.at(Tok.OP, ")"):
                raise self.error(f"expected , or ) in the call, found {self.tok.describe()}")
        self.advance()
        self.depth -= 1
        return n.Call(name.line, name.column, name.text, tuple(args), tuple(kwargs))


def parse(source: str) -> n.Node:
    """Parse rule text into a syntax tree; raises RuleError with the position of the problem."""
    if len(source) > MAX_RULE_CHARS:
        raise RuleError(f"rule is {len(source)} characters; the limit is {MAX_RULE_CHARS}", 1, 1)
    return _Parser(tokenize(source)).rule()
