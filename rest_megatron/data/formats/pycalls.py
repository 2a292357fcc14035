"""Parse calls written as Python: `[get_weather(city="Paris"), Get Time(tz='CET')]` (ToolACE, API-Bank).

Only keyword arguments with literal values are accepted (strings, numbers, lists, dicts, tuples, sets
as lists, True/False/None and their JSON spellings true/false/null). Names are taken verbatim up to the
opening parenthesis, because ToolACE's tool names may contain spaces or dots, which Python's own parser
would refuse. Anything else raises RecordError: `unparseable_call` when the call structure is broken,
`unparseable_arguments` when an argument is not a literal.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from rest_megatron.data.formats.base import RecordError

_CONSTANT_NAMES = {"true": True, "false": False, "null": None, "none": None}
_OPEN, _CLOSE = "([{", ")]}"
_KEY = re.compile(r"^[A-Za-z_$][\w$.\- ]*$")


def _split_calls(body: str) -> list[str]:
    """Split at commas outside brackets and strings."""
    parts, depth, quote, escaped, start = [], 0, "", False, 0
    for i, char in enumerate(body):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth < 0:
                raise RecordError("unparseable_call", f"unbalanced {char!r} in {body!r}")
        elif char == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    if quote or depth:
        raise RecordError("unparseable_call", f"unclosed string or bracket in {body!r}")
    parts.append(body[start:])
    return [p.strip() for p in parts if p.strip()]


def _literal(node: ast.expr, where: str) -> Any:
    if isinstance(node, ast.Name) and node.id.lower() in _CONSTANT_NAMES:
        return _CONSTANT_NAMES[node.id.lower()]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e, where) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise RecordError("unparseable_arguments", f"{where}: '**' unpacking is not a literal")
        return {_literal(k, where): _literal(v, where) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise RecordError(
            "unparseable_arguments", f"{where}: {ast.unparse(node)!r} is not a literal value"
        ) from None


def parse_call(text: str) -> dict[str, Any]:
    """{"name", "arguments"} from one `name(key=value, ...)`.

    Arguments are split by hand rather than by Python's parser so that keys Python reserves (`from`,
    `class`) or would not accept (`max-results`) still parse; each value must be a literal.
    """
    name, paren, rest = text.partition("(")
    name = name.strip()
    if not paren or not name or not rest.rstrip().endswith(")"):
        raise RecordError("unparseable_call", f"{text!r} is not of the form name(key=value, ...)")
    arguments: dict[str, Any] = {}
    for piece in _split_calls(rest.rstrip()[:-1]):
        key, equals, value = piece.partition("=")
        key = key.strip()
        if not equals or not _KEY.match(key) or value.startswith("="):
            raise RecordError(
                "unparseable_arguments",
                f"{piece!r} in {name!r} is not key=value (positional arguments are not supported)",
            )
        where = f"argument {key!r} of {name!r}"
        try:
            node = ast.parse(value.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError) as err:
            raise RecordError(
                "unparseable_arguments", f"{where} does not parse ({err.__class__.__name__}: {err})"
            ) from None
        arguments[key] = _literal(node, where)
    return {"name": name, "arguments": arguments}


def parse_calls(text: str) -> list[dict[str, Any]]:
    """Every call of `[f(a=1), g(b=2)]` (the brackets are optional), in order."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    pieces = _split_calls(body)
    if not pieces:
        raise RecordError("unparseable_call", f"no call in {text!r}")
    return [parse_call(piece) for piece in pieces]


def looks_like_calls(text: str) -> bool:
    """True when a turn is written as a bracketed call list rather than prose."""
    body = text.strip()
    return (
        body.startswith("[") and body.endswith("]") and "(" in body and body[1:].lstrip()[:1] not in "[{\"'"
    )
