"""The emulated `sh`'s arithmetic expansion, `$((EXPRESSION))`, as busybox ash evaluates it.

Signed 64-bit integers that wrap; decimal, octal (`010`) and hexadecimal (`0x1f`) constants;
variables by name (`x`) or expanded (`$x`, `${x}`, `$?`): unset or empty is 0, a value that
is no integer is an error. Operators in C's precedence: unary `+ - ! ~`, `* / %` (truncating
toward zero, as C), `+ -`, `<< >>`, `< <= > >=`, `== !=`, `&`, `^`, `|`, `&&`, `||`,
`?:`, and the assignments `= *= /= %= += -= <<= >>= &= ^= |=` (they set the variable).
The branch `?:` does not take is parsed but not evaluated (no assignment in it happens, no
division in it fails, no variable in it is read), as busybox 1.37 (Docker Hub's busybox) does;
`&&` and `||` evaluate both sides there, unlike C, and so do they here (Debian's busybox 1.35
still evaluates both branches of `?:` as well). Errors carry ash's words: `arithmetic syntax
error`, `divide by zero`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d\w*)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<dollar>\$(?:\{[^}]*\}|\?|[A-Za-z_]\w*|\d))"
    r"|(?P<op><<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||[*/%+\-&^|]=|[-+*/%<>=!~&^|?:()]))"
)
_BINARY = (  # loosest first
    ("||",),
    ("&&",),
    ("|",),
    ("^",),
    ("&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("<<", ">>"),
    ("+", "-"),
    ("*", "/", "%"),
)
_ASSIGNMENTS = ("=", "*=", "/=", "%=", "+=", "-=", "<<=", ">>=", "&=", "^=", "|=")


class ShellArithmeticError(Exception):
    """Why the expression cannot be evaluated, in ash's words."""


def _wrap(value: int) -> int:
    """Two's complement 64-bit, as ash's arithmetic."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _constant(text: str) -> int:
    try:
        if text[:2].lower() == "0x":
            return _wrap(int(text[2:], 16))
        if len(text) > 1 and text[0] == "0":
            return _wrap(int(text[1:], 8))
        return _wrap(int(text, 10))
    except ValueError:
        raise ShellArithmeticError("arithmetic syntax error") from None


def _apply(op: str, left: int, right: int) -> int:
    if op in ("/", "%"):
        if right == 0:
            raise ShellArithmeticError("divide by zero")
        quotient = abs(left) // abs(right) * (1 if (left < 0) == (right < 0) else -1)
        return _wrap(quotient if op == "/" else left - quotient * right)
    if op in ("<<", ">>"):
        right &= 63
        return _wrap(left << right if op == "<<" else left >> right)
    results = {
        "||": int(bool(left) or bool(right)),
        "&&": int(bool(left) and bool(right)),
        "|": left | right,
        "^": left ^ right,
        "&": left & right,
        "==": int(left == right),
        "!=": int(left != right),
        "<": int(left < right),
        "<=": int(left <= right),
        ">": int(left > right),
        ">=": int(left >= right),
        "+": left + right,
        "-": left - right,
        "*": left * right,
    }
    return _wrap(results[op])


class _Evaluator:
    """Recursive descent over the tokens; `env` is the shell's variables (assignments set
    them), `status` what `$?` is. While `skipping` (inside a branch not taken) it only parses."""

    def __init__(self, expression: str, env: dict[str, str], status: int) -> None:
        self.env = env
        self.status = status
        self.tokens = _tokens(expression)
        self.at = 0
        self.skipping = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.at += 1
        return token

    def expect(self, op: str) -> None:
        if self.take() != ("op", op):
            raise ShellArithmeticError("arithmetic syntax error")

    def evaluate(self) -> int:
        if not self.tokens:
            return 0  # `$(( ))` is 0
        value = self.assignment()
        if self.peek()[0] != "end":
            raise ShellArithmeticError("arithmetic syntax error")
        return value

    def assignment(self) -> int:
        kind, name = self.peek()
        following = self.tokens[self.at + 1] if self.at + 1 < len(self.tokens) else ("end", "")
        if kind == "name" and following[0] == "op" and following[1] in _ASSIGNMENTS:
            self.at += 2
            value = self.assignment()
            op = following[1]
            if op != "=":
                value = self.apply(op[:-1], self.variable(name), value)
            if not self.skipping:
                self.env[name] = str(value)
            return value
        return self.conditional()

    def conditional(self) -> int:
        condition = self.binary(0)
        if self.peek() != ("op", "?"):
            return condition
        self.take()
        chosen = self.unless(not condition, self.assignment)
        self.expect(":")
        other = self.unless(bool(condition), self.conditional)
        return chosen if condition else other

    def binary(self, level: int) -> int:
        if level == len(_BINARY):
            return self.unary()
        value = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in _BINARY[level]:
            op = self.take()[1]
            value = self.apply(op, value, self.binary(level + 1))
        return value

    def unless(self, skip: bool, parse: Callable[[], int]) -> int:
        """`parse()`, only parsing (value 0) when `skip`: a branch not taken."""
        self.skipping += skip
        try:
            return parse()
        finally:
            self.skipping -= skip

    def apply(self, op: str, left: int, right: int) -> int:
        return 0 if self.skipping else _apply(op, left, right)

    def unary(self) -> int:
        kind, text = self.take()
        if kind == "op" and text in ("+", "-", "!", "~"):
            operand = self.unary()
            return {"+": operand, "-": _wrap(-operand), "!": int(not operand), "~": ~operand}[text]
        if kind == "op" and text == "(":
            value = self.assignment()
            self.expect(")")
            return value
        if kind == "number":
            return _constant(text)
        if kind == "name":
            return self.variable(text)
        if kind == "dollar":
            return self.expanded(text[1:].strip("{}"))
        raise ShellArithmeticError("arithmetic syntax error")

    def expanded(self, name: str) -> int:
        return self.status if name == "?" else self.variable(name)

    def variable(self, name: str) -> int:
        if self.skipping:
            return 0
        value = self.env.get(name, "").strip()
        return _constant(value) if value else 0


def _tokens(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    at = 0
    while expression[at:].strip():
        match = _TOKEN.match(expression, at)
        if match is None or match.end() == at:
            raise ShellArithmeticError("arithmetic syntax error")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match[kind]))
        at = match.end()
    return tokens


def evaluate(expression: str, env: dict[str, str], status: int = 0) -> int:
    """The value of `expression` (ShellArithmeticError when it has none); assignments in it set
    variables of `env`."""
    return _Evaluator(expression, env, status).evaluate()
