"""Compare predicted tool calls with expected ones as parsed structures, not as text.

Rules (the ones a BFCL-style checker applies, minus its per-value alternatives):
- Values match structurally: dicts key by key, lists element by element (in order), strings exactly.
  Numbers compare by value, so 1 matches 1.0; booleans are not numbers here (True does not match 1).
- Calls match when the names are equal and the arguments match. With the tool's JSON schema, a
  parameter that is not in its `required` list may be omitted from the prediction (unless the schema's
  `default` differs from the expected value), and the prediction may add an optional parameter whose value
  equals the schema's `default`. Without a schema the argument names must be equal.
- A list of calls matches when there is a one-to-one pairing of matching calls: parallel calls are
  order-insensitive unless `ordered=True`.

Schemas are OpenAI-style function descriptions, bare (`{"name", "parameters": {"properties",
"required"}}`) or wrapped (`{"type": "function", "function": {...}}`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rest_megatron.algo.tool_calls import ToolCall


def values_match(predicted: Any, expected: Any) -> bool:
    """Structural equality with int/float leniency (1 == 1.0) and bool kept apart from numbers."""
    if isinstance(expected, bool) or isinstance(predicted, bool):
        return isinstance(expected, bool) and isinstance(predicted, bool) and predicted == expected
    if isinstance(expected, (int, float)) and isinstance(predicted, (int, float)):
        return predicted == expected
    if isinstance(expected, Mapping):
        return (
            isinstance(predicted, Mapping)
            and set(predicted) == set(expected)
            and all(values_match(predicted[k], v) for k, v in expected.items())
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(predicted, (list, tuple))
            and len(predicted) == len(expected)
            and all(values_match(p, e) for p, e in zip(predicted, expected))
        )
    return type(predicted) is type(expected) and predicted == expected


def _call_parts(call: ToolCall | Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if isinstance(call, ToolCall):
        return call.name, call.arguments
    arguments = call.get("arguments", call.get("parameters", {}))
    return str(call.get("name", "")), arguments if isinstance(arguments, Mapping) else {}


def schemas_by_name(tools: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """{tool name: its "parameters" schema} from a list of (bare or wrapped) function schemas."""
    if tools is None:
        return {}
    if isinstance(tools, Mapping):  # already {name: schema}
        items: Iterable[Mapping[str, Any]] = [dict(tool, name=name) for name, tool in tools.items()]
    else:
        items = tools
    out: dict[str, Mapping[str, Any]] = {}
    for tool in items:
        fn = tool.get("function", tool)
        out[str(fn.get("name", ""))] = fn.get("parameters", {}) or {}
    return out


def call_matches(
    predicted: ToolCall | Mapping[str, Any], expected: ToolCall | Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> bool:
    """One call against one expected call; `schema` is the tool's "parameters" JSON schema, if known."""
    pred_name, pred_args = _call_parts(predicted)
    exp_name, exp_args = _call_parts(expected)
    if pred_name != exp_name:
        return False
    properties: Mapping[str, Any] = (schema or {}).get("properties", {}) or {}
    required = set((schema or {}).get("required", []) or [])
    for key, value in exp_args.items():
        if key in pred_args:
            if not values_match(pred_args[key], value):
                return False
            continue
        if schema is None or key in required:
            return False
        spec = properties.get(key, {})
        if isinstance(spec, Mapping) and "default" in spec and not values_match(spec["default"], value):
            return False
    for key, value in pred_args.items():
        if key in exp_args:
            continue
        spec = properties.get(key) if schema is not None else None
        if not isinstance(spec, Mapping) or key in required or "default" not in spec:
            return False
        if not values_match(value, spec["default"]):
            return False
    return True


def calls_match(
    predicted: Sequence[ToolCall | Mapping[str, Any]],
    expected: Sequence[ToolCall | Mapping[str, Any]],
    *,
    tools: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    ordered: bool = False,
) -> bool:
    """True when the predicted calls pair one-to-one with the expected calls (see the module rules)."""
    if len(predicted) != len(expected):
        return False
    schemas = schemas_by_name(tools)
    if ordered:
        return all(
            call_matches(p, e, schemas.get(_call_parts(e)[0])) for p, e in zip(predicted, expected)
        )
    # ok[i][j]: predicted i matches expected j. Then a perfect bipartite matching (Kuhn's augmenting paths;
    # turns have a handful of calls, so O(n^3) is nothing).
    ok = [[call_matches(p, e, schemas.get(_call_parts(e)[0])) for e in expected] for p in predicted]
    owner: list[int | None] = [None] * len(expected)  # expected j -> predicted i

    def augment(i: int, seen: list[bool]) -> bool:
        for j, good in enumerate(ok[i]):
            if good and not seen[j]:
                seen[j] = True
                if owner[j] is None or augment(owner[j], seen):  # type: ignore[arg-type]
                    owner[j] = i
                    return True
        return False

    return all(augment(i, [False] * len(expected)) for i in range(len(predicted)))
