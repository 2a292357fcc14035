"""The checks every converted record passes before it is written, whatever its format.

They guard what the trainer and the rewards rely on: chat messages with known roles and at least one
user turn (a prompt may end on an assistant turn: API-Bank's AI says "let me check" before it calls);
OpenAI-style tools with unique names and JSON-schema types; ground-truth calls, and calls already made
in the history, that name declared tools and declared arguments; a ground truth that says something
(calls, an answer, or `no_call_expected`); JSON that round-trips (no NaN).

Not checked, on purpose: missing *required* arguments (several data sets leave out parameters whose
defaults they rely on) and argument types (the data sets are loose about "5" versus 5, and the matcher in
`algo/function_match.py` compares values, not declared types).
"""

from __future__ import annotations

import json
from typing import Any

from rest_megatron.data.formats.base import RecordError
from rest_megatron.data.formats.schema import JSON_TYPES

ROLES = frozenset({"system", "user", "assistant", "tool"})


def _check_types(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise RecordError("bad_tool_schema", f"{where} must be an object")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    bad = [k for k in kinds if k not in JSON_TYPES]
    if bad:
        raise RecordError("bad_tool_schema", f"{where} has type {kind!r}, not a JSON-schema type")
    for name, sub in (schema.get("properties") or {}).items():
        _check_types(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        _check_types(schema["items"], f"{where}[]")


def _tool_table(tools: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tools, list):
        raise RecordError("bad_tool_schema", "'tools' must be a list")
    table: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RecordError(
                "bad_tool_schema", f"tools[{i}] is not {{'type': 'function', 'function': {{'name', ...}}}}"
            )
        params = fn.get("parameters")
        if (
            not isinstance(params, dict)
            or params.get("type") != "object"
            or not isinstance(params.get("properties"), dict)
        ):
            raise RecordError(
                "bad_tool_schema", f"tool {fn['name']!r}: parameters must be an object schema with properties"
            )
        _check_types(params, f"tool {fn['name']!r}")
        if fn["name"] in table:
            raise RecordError("bad_tool_schema", f"tool {fn['name']!r} is declared twice")
        table[fn["name"]] = params
    return table


def check_call(call: Any, tools: dict[str, dict[str, Any]], where: str) -> None:
    """A {"name", "arguments"} call that names a declared tool and only its declared arguments."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise RecordError("unparseable_call", f"{where} is not {{'name': str, 'arguments': {{...}}}}")
    if not isinstance(call.get("arguments"), dict):
        raise RecordError("unparseable_arguments", f"{where} ({call['name']!r}): arguments must be an object")
    params = tools.get(call["name"])
    if params is None:
        declared = ", ".join(sorted(tools)) or "none"
        raise RecordError(
            "undeclared_tool",
            f"{where} names {call['name']!r}, which the record does not declare (declared: {declared})",
        )
    if params.get("additionalProperties") is True:
        return
    unknown = sorted(set(call["arguments"]) - set(params["properties"]))
    if unknown:
        raise RecordError(
            "undeclared_argument",
            f"{where} passes {unknown} to {call['name']!r}, "
            f"whose parameters are {sorted(params['properties'])}",
        )


def validate_record(record: Any) -> None:
    """Raise RecordError with the first problem of a converted record; return None when it is sound."""
    if not isinstance(record, dict):
        raise RecordError("bad_record", "a record must be an object")
    tools = _tool_table(record.get("tools"))
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("bad_message", "'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RecordError("bad_message", f"message {i} needs a role among {sorted(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise RecordError("bad_message", f"message {i} ({message['role']}) needs string content")
        for j, call in enumerate(message.get("tool_calls") or []):
            check_call((call or {}).get("function"), tools, f"message {i} tool_calls[{j}]")
    if not any(m["role"] == "user" for m in messages):
        raise RecordError("bad_message", "no user message")
    truth = record.get("ground_truth")
    if not isinstance(truth, dict) or not isinstance(truth.get("calls"), list):
        raise RecordError("no_ground_truth", "'ground_truth' must be an object with a 'calls' list")
    for j, call in enumerate(truth["calls"]):
        check_call(call, tools, f"ground-truth call {j}")
    if not truth["calls"] and "answer" not in truth and not truth.get("no_call_expected"):
        raise RecordError("no_ground_truth", "neither calls nor an answer to compare against")
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise RecordError("bad_value", f"not representable as JSON ({err})") from None
