"""A calculator tool: a recursive-descent parser for arithmetic, evaluated without Python `eval`.

It runs in the service process, not in a sandbox, so every way to make it slow is bounded:
expression length, nesting depth, the size of integer results (an exponent like `9**9**9` is
refused before it is computed) and factorial arguments.

Grammar (usual precedence; `^` is a synonym for `**`, which is right-associative and binds tighter
than unary minus, so `-2**2 == -4`):

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "//" | "%") unary)*
    unary   := ("+" | "-") unary | power
    power   := postfix (("**" | "^") unary)?
    postfix := primary "!"*
    primary := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"
"""

from __future__ import annotations

import math
import re

MAX_LENGTH = 2000
MAX_DEPTH = 64
MAX_INT_BITS = 13_000  # ~3,900 digits: below Python's 4,300-digit int/str conversion limit
MAX_FACTORIAL = 1000

SCHEMA = {
    "name": "calculator",
    "description": (
        "Evaluate an arithmetic expression exactly where possible. Supports + - * / // % ** ^ "
        "! and parentheses, constants pi, e, tau, and functions sqrt, exp, ln, log (base 10, "
        "or log(x, base)), log2, sin, cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh, "
        "abs, round, floor, ceil, min, max, factorial, gcd, lcm, hypot, degrees, radians."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "expression": {"type": "string", "description": "The expression, e.g. '(3 + 4) * 2 ^ 10 / 7'."}
        },
        "required": ["expression"],
    },
}

_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)|(\*\*|//|[-+*/%^(),!]))"
)
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class CalculatorError(ValueError):
    """The expression is malformed or its value is out of bounds; the message says which."""


def _factorial(x: float) -> int:
    if not float(x).is_integer() or x < 0:
        raise CalculatorError(f"factorial needs a non-negative integer, got {x}")
    if x > MAX_FACTORIAL:
        raise CalculatorError(f"factorial argument {x} is above the limit {MAX_FACTORIAL}")
    return math.factorial(int(x))


def _int_args(name: str, fn):  # noqa: ANN001, ANN202 - tiny adapter
    def wrapped(*args: float) -> int:
        if not all(float(a).is_integer() for a in args):
            raise CalculatorError(f"{name} needs integer arguments")
        return fn(*(int(a) for a in args))

    return wrapped


_FUNCTIONS = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "ln": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "log": lambda x, base=10: (
        math.log10(x) if base == 10 else math.log2(x) if base == 2 else math.log(x, base)
    ),
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
    "factorial": _factorial,
    "gcd": _int_args("gcd", math.gcd),
    "lcm": _int_args("lcm", math.lcm),
    "hypot": math.hypot,
    "degrees": math.degrees,
    "radians": math.radians,
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise CalculatorError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        number, name, op = match.groups()
        tokens.append(("num", number) if number else ("name", name) if name else ("op", op))
        pos = match.end()
    return tokens


def _check(value: int | float) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result has more than {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result overflows a float")
    return value


def _power(base: int | float, exponent: int | float) -> int | float:
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        if abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise CalculatorError(f"{base}**{exponent} has more than {MAX_INT_BITS} bits")
        return base**exponent
    try:
        result = float(base) ** float(exponent)
    except OverflowError as exc:
        raise CalculatorError("result overflows a float") from exc
    if isinstance(result, complex):
        raise CalculatorError("a negative number to a fractional power is not real")
    return result


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (op is not None and token != ("op", op)):
            raise CalculatorError(f"expected {op!r}" if op else "unexpected end of expression")
        self.pos += 1
        return token

    def expr(self) -> int | float:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError(f"expression nests deeper than {MAX_DEPTH}")
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            value = _check(value + self.term() if op == "+" else value - self.term())
        self.depth -= 1
        return value

    def term(self) -> int | float:
        value = self.unary()
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "//"), ("op", "%")):
            op, right = self.take()[1], self.unary()
            if op != "*" and right == 0:
                raise CalculatorError("division by zero")
            if op == "*":
                value = value * right
            elif op == "/":
                exact = isinstance(value, int) and isinstance(right, int) and value % right == 0
                value = value // right if exact else value / right
            else:
                value = value // right if op == "//" else value % right
            value = _check(value)
        return value

    def unary(self) -> int | float:
        token = self.peek()
        if token in (("op", "-"), ("op", "+")):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CalculatorError(f"expression nests deeper than {MAX_DEPTH}")
            value = self.unary()
            self.depth -= 1
            return -value if token[1] == "-" else value
        return self.power()

    def power(self) -> int | float:
        base = self.postfix()
        if self.peek() in (("op", "**"), ("op", "^")):
            self.take()
            return _check(_power(base, self.unary()))
        return base

    def postfix(self) -> int | float:
        value = self.primary()
        while self.peek() == ("op", "!"):
            self.take()
            value = _check(_factorial(value))
        return value

    def primary(self) -> int | float:
        kind, text = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else _check(int(text))
        if kind == "name":
            if self.peek() == ("op", "("):
                if text not in _FUNCTIONS:
                    raise CalculatorError(
                        f"unknown function {text!r}; known: {', '.join(sorted(_FUNCTIONS))}"
                    )
                self.take("(")
                args = [self.expr()]
                while self.peek() == ("op", ","):
                    self.take()
                    args.append(self.expr())
                self.take(")")
                try:
                    return _check(_FUNCTIONS[text](*args))
                except (ValueError, TypeError, OverflowError) as exc:
                    if isinstance(exc, CalculatorError):
                        raise
                    raise CalculatorError(f"{text}{tuple(args)}: {exc}") from exc
            if text in _CONSTANTS:
                return _CONSTANTS[text]
            raise CalculatorError(f"unknown name {text!r}; constants are {', '.join(_CONSTANTS)}")
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        raise CalculatorError(f"unexpected {text!r}")


def evaluate(expression: str) -> int | float:
    """Evaluate `expression`; raises CalculatorError (a ValueError) with the reason."""
    if not isinstance(expression, str):
        raise CalculatorError("expression must be a string")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression is longer than {MAX_LENGTH} characters")
    tokens = _tokenize(expression)
    if not tokens:
        raise CalculatorError("expression is empty")
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except OverflowError as exc:
        raise CalculatorError("result overflows a float") from exc
    except ZeroDivisionError as exc:
        raise CalculatorError("division by zero") from exc
    if parser.peek() is not None:
        raise CalculatorError(f"unexpected {parser.peek()[1]!r} after a complete expression")
    return value


def format_number(value: int | float) -> str:
    """Integers exactly; floats as the shortest repr that round-trips, integral ones without '.0'."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


def call(arguments: dict) -> tuple[bool, str, str | None]:
    """The tool entry point: (ok, output, error)."""
    try:
        return True, format_number(evaluate(arguments.get("expression"))), None
    except CalculatorError as exc:
        return False, "", f"calculator: {exc}"
    except RecursionError:
        return False, "", "calculator: expression nests too deeply"
