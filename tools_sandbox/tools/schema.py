"""JSON schemas for tools: from a Python signature (user tools) and from BFCL's function docs.

Stdlib only: it also runs inside the sandbox, where user tool modules are imported and described.
A tool schema is `{"name", "description", "parameters"}` with `parameters` a JSON-schema object,
the shape chat templates put in the prompt (wrapped as `{"type": "function", "function": ...}`).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

_SIMPLE = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
    set: "array",
}
# BFCL function docs use Python-flavoured type names; map them to JSON schema.
_BFCL_TYPES = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "list": "array",
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "any": None,
}


def annotation_schema(annotation: Any) -> dict:
    """JSON schema for one type annotation; unknown annotations give `{}` (any value)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        options = [annotation_schema(a) for a in args if a is not type(None)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, tuple, set, typing.List, typing.Tuple, typing.Set):  # noqa: UP006
        schema: dict = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = annotation_schema(args[0])
        return schema
    if origin in (dict, typing.Dict):  # noqa: UP006
        return {"type": "object"}
    return {}


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Summary paragraph and Google-style `Args:` descriptions."""
    doc = inspect.cleandoc(doc or "")
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    if match:
        current = None
        for line in match.group(1).splitlines():
            entry = re.match(r"^\s{2,}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$", line)
            if entry and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = entry.group(1)
                params[current] = entry.group(2).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return summary, params


def function_schema(fn: Callable, name: str | None = None) -> dict:
    """Schema of a Python callable from its signature, type hints and Google-style docstring.

    A callable may instead carry a ready `__tool_schema__` dict, which is returned as is.
    """
    explicit = getattr(fn, "__tool_schema__", None)
    if isinstance(explicit, dict):
        return explicit
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to raw annotations
        hints = {}
    summary, described = _docstring_parts(fn.__doc__ or "")
    properties: dict[str, dict] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = annotation_schema(hints.get(param.name, param.annotation))
        if param.name in described:
            prop["description"] = described[param.name]
        if param.default is param.empty:
            required.append(param.name)
        properties[param.name] = prop
    return {
        "name": name or fn.__name__,
        "description": summary or f"Call {fn.__name__}.",
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


def from_bfcl_doc(doc: dict) -> dict:
    """Convert one BFCL multi-turn function doc to a JSON-schema tool schema."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items()}
            if isinstance(node.get("type"), str):
                mapped = _BFCL_TYPES.get(node["type"], node["type"])
                if mapped is None:
                    out.pop("type")
                else:
                    out["type"] = mapped
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return {
        "name": doc["name"],
        "description": doc.get("description", ""),
        "parameters": convert(doc.get("parameters", {"type": "dict", "properties": {}})),
    }
