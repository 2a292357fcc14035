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


def schemas_by_name(
    tools: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None,
) -> dict[str, Mapping[str, Any]]:
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
    predicted: ToolCall | Mapping[str, Any],
    expected: ToolCall | Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
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
        return all(call_matches(p, e, schemas.get(_call_parts(e)[0])) for p, e in zip(predicted, expected))
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


# --- Answer keys that list the allowed values of every argument (BFCL's possible answers) ------------------
#
# An expected call is `{name: {argument: [allowed values]}}`, and "" among the allowed values means the
# argument may be left out. The rules are BFCL's AST checker as we read it, written out:
# - a predicted argument must be in the tool's schema (when one is given) and in the answer key; every
#   `required` argument of the schema must be given; an answer-key argument may be omitted only if ""
#   is allowed;
# - types follow the schema (BFCL type names or JSON-schema ones): an int is accepted where a float is
#   declared, bool is never a number, and a value whose type equals that of an allowed value is accepted
#   whatever the schema says (the answer key wins; BFCL's "variable" case);
# - list elements have exactly the schema's item type (an int is not a float inside a list), or the type of
#   the allowed list's first element; an allowed value that is not a list (the "" that makes the argument
#   omittable) lifts that check, as BFCL's nested type check does;
# - strings compare leniently: case-insensitive, ignoring spaces and the characters , . / - _ * ^, and with
#   single quotes read as double quotes; lists compare element by element in order; an empty list is
#   accepted where "" is allowed (BFCL compares it with the "" entry read as an empty list);
# - dict-typed arguments (and lists of them) are answer keys themselves: {key: [allowed values]}, and the
#   values below that level compare literally (dicts key by key, lists in order).
# Deviations: strings compare leniently at every depth (BFCL: only at the first level), and parallel calls
# pair up by a perfect matching (BFCL pairs greedily, which can miss a pairing that exists).

_ANSWER_TYPES: dict[str, type] = {
    "string": str,
    "str": str,
    "any": object,
    "integer": int,
    "int": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "bool": bool,
    "array": list,
    "list": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}
_LENIENT_DROP = str.maketrans("", "", " ,./-_*^")


def normalize_answer_string(text: str) -> str:
    """The lenient form strings are compared in ("April 1, 2024" == "april 1 2024"), so format noise is
    no error."""
    return text.translate(_LENIENT_DROP).lower().replace("'", '"')


def _answer_equal(value: Any, candidate: Any, spec: Mapping[str, Any] | None) -> bool:
    """`value` equals one allowed `candidate`, with lenient strings and answer-key dicts (see the rules
    above)."""
    spec = spec if isinstance(spec, Mapping) else {}
    if isinstance(candidate, str):
        return isinstance(value, str) and normalize_answer_string(value) == normalize_answer_string(candidate)
    if isinstance(candidate, Mapping) and _ANSWER_TYPES.get(str(spec.get("type"))) is dict:
        return isinstance(value, Mapping) and _keyed_mismatch(value, candidate) is None
    if isinstance(candidate, (list, tuple)):
        items = spec.get("items") if isinstance(spec.get("items"), Mapping) else None
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(candidate)
            and all(_answer_equal(v, c, items) for v, c in zip(value, candidate))
        )
    if isinstance(candidate, Mapping):
        return (
            isinstance(value, Mapping)
            and set(value) == set(candidate)
            and all(_answer_equal(value[k], c, None) for k, c in candidate.items())
        )
    return values_match(value, candidate)


def _keyed_mismatch(value: Mapping[str, Any], key: Mapping[str, Any]) -> str | None:
    """Why the dict `value` fails the answer-key dict `key` ({k: [allowed]}), or None if it passes."""
    for name, item in value.items():
        if name not in key:
            return f"unexpected key {name!r}"
        allowed = key[name] if isinstance(key[name], (list, tuple)) else [key[name]]
        if not any(_answer_equal(item, c, None) for c in allowed):  # literal below the answer-key level
            return f"key {name!r} is {item!r}, allowed: {list(allowed)!r}"
    missing = [name for name, allowed in key.items() if name not in value and "" not in allowed]
    return f"missing key {missing[0]!r}" if missing else None


def _items_typed(value: Sequence[Any], allowed: Sequence[Any], item_type: type) -> bool:
    """BFCL's one-level nested type check of a list argument (see the rules above)."""
    for candidate in allowed:
        if not isinstance(candidate, list):
            return True
        answer_type = next((type(c) for c in candidate if c != ""), None)
        if all(type(v) is item_type or type(v) is answer_type for v in value):
            return True
    return False


def allowed_value_mismatch(
    value: Any, allowed: Sequence[Any], spec: Mapping[str, Any] | None = None
) -> str | None:
    """Why `value` is none of the `allowed` values of an argument with schema `spec`, or None if it is one."""
    spec = spec if isinstance(spec, Mapping) else {}
    declared = _ANSWER_TYPES.get(str(spec.get("type")))
    if declared is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    answer_types = {type(c) for c in allowed if not (isinstance(c, str) and c == "")}
    if declared not in (None, object) and type(value) is not declared and type(value) not in answer_types:
        return f"is {value!r} of type {type(value).__name__}, expected {spec.get('type')}"
    items = spec.get("items") if isinstance(spec.get("items"), Mapping) else {}
    item_type = _ANSWER_TYPES.get(str(items.get("type")))
    if (
        declared is list
        and type(value) is list
        and item_type not in (None, object, dict)
        and not _items_typed(value, allowed, item_type)
    ):
        return f"is {value!r}, whose elements are not all of type {items.get('type')}"
    if isinstance(value, (list, tuple)) and not value and "" in allowed:
        return None
    if any(_answer_equal(value, c, spec) for c in allowed):
        return None
    return f"is {value!r}, allowed: {list(allowed)!r}"


def allowed_call_mismatch(
    predicted: ToolCall | Mapping[str, Any],
    expected: Mapping[str, Mapping[str, Sequence[Any]]],
    schema: Mapping[str, Any] | None = None,
) -> str | None:
    """Why one call fails one answer-key call `{name: {argument: [allowed]}}`, or None if it passes.

    `schema` is the tool's "parameters" schema; without one only the answer key is checked.
    """
    ((exp_name, key),) = expected.items()
    name, arguments = _call_parts(predicted)
    if name != exp_name:
        return f"called {name!r}, expected {exp_name!r}"
    properties: Mapping[str, Any] = (schema or {}).get("properties", {}) or {}
    for argument in (schema or {}).get("required", []) or []:
        if argument not in arguments:
            return f"{name}: required argument {argument!r} is missing"
    for argument, value in arguments.items():
        if argument not in key or (schema is not None and argument not in properties):
            return f"{name}: unexpected argument {argument!r}"
        reason = allowed_value_mismatch(value, key[argument], properties.get(argument))
        if reason is not None:
            return f"{name}: argument {argument!r} {reason}"
    for argument, allowed in key.items():
        if argument not in arguments and "" not in allowed:
            return f"{name}: argument {argument!r} is missing (allowed: {list(allowed)!r})"
    return None


def allowed_calls_mismatch(
    predicted: Sequence[ToolCall | Mapping[str, Any]],
    expected: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]],
    *,
    tools: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None,
) -> str | None:
    """Why the predicted calls do not pair one-to-one (in any order) with the answer-key calls, or None.

    Args:
        expected: BFCL ground truth, `[{name: {argument: [allowed values]}}, ...]`.
        tools: the offered function schemas (bare, wrapped, or {name: schema}); they add the type and
            `required` checks.
    """
    if len(predicted) != len(expected):
        return f"expected {len(expected)} call(s), got {len(predicted)}"
    schemas = schemas_by_name(tools) if tools is not None else None

    def schema_of(exp: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None if schemas is None else schemas.get(next(iter(exp)), {})

    reasons = [[allowed_call_mismatch(p, e, schema_of(e)) for e in expected] for p in predicted]
    owner: list[int | None] = [None] * len(expected)  # expected j -> predicted i

    def augment(i: int, seen: list[bool]) -> bool:
        for j, reason in enumerate(reasons[i]):
            if reason is None and not seen[j]:
                seen[j] = True
                if owner[j] is None or augment(owner[j], seen):  # type: ignore[arg-type]
                    owner[j] = i
                    return True
        return False

    if all(augment(i, [False] * len(expected)) for i in range(len(predicted))):
        return None
    if len(expected) == 1:
        return reasons[0][0]
    for j, exp in enumerate(expected):
        if all(reasons[i][j] is not None for i in range(len(predicted))):
            same_name = [
                reasons[i][j]
                for i in range(len(predicted))
                if _call_parts(predicted[i])[0] == next(iter(exp))
            ]
            detail = same_name[0] if same_name else f"no call to {next(iter(exp))!r}"
            return f"expected call {j + 1} matches no predicted call ({detail})"
    return "no one-to-one pairing of predicted and expected calls"
