"""Our answer-key matcher (`algo/function_match.py`, used by training rewards) against BFCL's own checker.

Candidates are generated from BFCL's possible answers of every Python answer-key category: the reference
itself and perturbations that exercise each of BFCL's rules (types, optional and empty values,
containers, nested dicts, call order and count, names). Each candidate is judged by both; the verdicts
must agree on at least 99.5% of them, and every kind of candidate where they may differ is named in
`ON_PURPOSE` with the reason.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rest_megatron.algo.function_match import allowed_calls_mismatch
from rest_megatron.eval.bfcl_checker import ast_verdict
from rest_megatron.eval.bfcl_data import load_category
from tests.eval.conftest import needs_bfcl

pytestmark = needs_bfcl

CATEGORIES = [
    "simple",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
]
ON_PURPOSE: dict[str, str] = {
    "calls reversed": "parallel calls pair by a perfect matching; BFCL pairs each expected call with the "
    "first unused model call that passes, so when one model call fits two expected calls it can be "
    "used up and a pairing that exists is missed (parallel_178 reversed); a reward should not "
    "depend on the order of independent calls",
}
"""Candidate kinds where our matcher may disagree with BFCL on purpose -> why."""

Calls = list[dict[str, Any]]


def _spec(entry: Any, name: str, argument: str) -> dict[str, Any]:
    doc = next(f for f in entry.checker_functions if f["name"] == name)
    return doc["parameters"]["properties"].get(argument, {})


def _first(allowed: list[Any], spec: dict[str, Any]) -> Any:
    value = next(v for v in allowed if v != "")
    if isinstance(value, dict) and spec.get("type") == "dict":  # a nested answer key: its first values
        return {k: _first(v, {}) for k, v in value.items() if any(x != "" for x in v)}
    if isinstance(value, list) and value and isinstance(value[0], dict) and spec.get("type") == "array":
        return [
            {k: _first(v, {}) for k, v in item.items() if any(x != "" for x in v)}
            if isinstance(item, dict)
            else item
            for item in value
        ]
    return value


def reference(entry: Any, *, omit: bool = False, alternative: int = 0) -> Calls:
    """The answer key as calls (first allowed values; `alternative`: the n-th allowed value where there
    is one)."""
    calls = []
    for expected in entry.answer:
        ((name, key),) = expected.items()
        arguments = {}
        for argument, allowed in key.items():
            values = [v for v in allowed if v != ""]
            if not values or (omit and "" in allowed):
                continue
            spec = _spec(entry, name, argument)
            pick = values[min(alternative, len(values) - 1)]
            arguments[argument] = _first([pick], spec)
        calls.append({"name": name, "arguments": arguments})
    return calls


def _with_argument(calls: Calls, change: Callable[[str, Any], Any | None]) -> Calls | None:
    """The calls with the first argument that `change` maps to something other than None changed."""
    out = copy.deepcopy(calls)
    for call in out:
        for argument, value in call["arguments"].items():
            new = change(argument, value)
            if new is not None:
                call["arguments"][argument] = new
                return out
    return None


def candidates(entry: Any) -> Iterator[tuple[str, Calls]]:
    """(kind, calls) perturbations of the reference (kinds with no applicable argument are skipped)."""
    ref = reference(entry)
    yield "reference", ref
    yield "optional omitted", reference(entry, omit=True)
    yield "second allowed value", reference(entry, alternative=1)
    perturbations: dict[str, Callable[[str, Any], Any | None]] = {
        "int as float": lambda a, v: float(v) if type(v) is int else None,
        "float as int": lambda a, v: int(v) if type(v) is float and v == int(v) else None,
        "number as string": lambda a, v: str(v) if type(v) in (int, float) else None,
        "bool as string": lambda a, v: str(v).lower() if type(v) is bool else None,
        "string case and punctuation": lambda a, v: (
            v.upper().replace(" ", "-") if isinstance(v, str) and v else None
        ),
        "string with a different word": lambda a, v: v + " extra" if isinstance(v, str) else None,
        "string as list": lambda a, v: [v] if isinstance(v, str) else None,
        "list reversed": lambda a, v: (
            v[::-1] if isinstance(v, list) and len(v) > 1 and v != v[::-1] else None
        ),
        "list element int as float": lambda a, v: (
            [float(x) if type(x) is int else x for x in v]
            if isinstance(v, list) and any(type(x) is int for x in v)
            else None
        ),
        "list element as string": lambda a, v: (
            [str(x) for x in v]
            if isinstance(v, list) and v and all(type(x) in (int, float) for x in v)
            else None
        ),
        "list element case": lambda a, v: (
            [x.upper() for x in v]
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v)
            else None
        ),
        "empty list": lambda a, v: [] if isinstance(v, list) and v else None,
        "dict key dropped": lambda a, v: dict(list(v.items())[1:]) if isinstance(v, dict) and v else None,
        "dict value case": lambda a, v: (
            {k: (x.upper() if isinstance(x, str) else x) for k, x in v.items()}
            if isinstance(v, dict) and any(isinstance(x, str) for x in v.values())
            else None
        ),
        "dict extra key": lambda a, v: {**v, "zz_extra": 1} if isinstance(v, dict) else None,
        "tuple-like list as dict": lambda a, v: {"0": v[0]} if isinstance(v, list) and v else None,
    }
    for kind, change in perturbations.items():
        changed = _with_argument(ref, change)
        if changed is not None:
            yield kind, changed
    nulled = _with_argument(ref, lambda a, v: "__null__")  # JSON null for the first argument
    if nulled is not None:
        yield "value null", json.loads(json.dumps(nulled).replace('"__null__"', "null"))
    for call_index, call in enumerate(ref):
        ((name, key),) = entry.answer[call_index].items()
        doc = next(f for f in entry.checker_functions if f["name"] == name)
        properties = doc["parameters"]["properties"]
        optional = [
            a
            for a in properties
            if a not in doc["parameters"].get("required", []) and a not in call["arguments"]
        ]
        for argument in optional[:1]:
            spec = properties[argument]
            empty = {
                "array": [],
                "tuple": [],
                "dict": {},
                "string": "",
                "integer": 0,
                "float": 0.0,
                "boolean": False,
            }.get(spec.get("type"), "")
            extra = copy.deepcopy(ref)
            extra[call_index]["arguments"][argument] = empty
            yield "optional given an empty value", extra
            if "default" in spec:
                extra = copy.deepcopy(ref)
                extra[call_index]["arguments"][argument] = spec["default"]
                yield "optional given its default", extra
        required = doc["parameters"].get("required", [])
        if required and required[0] in call["arguments"]:
            missing = copy.deepcopy(ref)
            del missing[call_index]["arguments"][required[0]]
            yield "required missing", missing
        unknown = copy.deepcopy(ref)
        unknown[call_index]["arguments"]["zz_unknown"] = 1
        yield "unknown argument", unknown
        renamed = copy.deepcopy(ref)
        renamed[call_index]["name"] = name.replace(".", "_") if "." in name else name + "_x"
        yield "name with dots as underscores" if "." in name else "wrong name", renamed
        break
    if len(ref) > 1:
        yield "calls reversed", ref[::-1]
        yield "call dropped", ref[:-1]
    yield "call duplicated", ref + ref[:1]
    yield "no call", []


def _text(calls: Calls) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls)


@pytest.fixture(scope="module")
def verdicts() -> list[tuple[str, str, bool, bool]]:
    """(entry id, kind, ours correct, BFCL correct) for every candidate."""
    out = []
    for category in CATEGORIES:
        for entry in load_category(category):
            for kind, calls in candidates(entry):
                ours = allowed_calls_mismatch(calls, entry.answer, tools=entry.checker_functions) is None
                theirs = ast_verdict(category, entry.checker_functions, _text(calls), entry.answer) is None
                out.append((entry.id, kind, ours, theirs))
    return out


def test_matcher_agrees_with_bfcl_on_at_least_995_permille(
    verdicts: list[tuple[str, str, bool, bool]],
) -> None:
    differ = [(entry, kind, ours, theirs) for entry, kind, ours, theirs in verdicts if ours != theirs]
    by_kind = Counter(kind for _, kind, _, _ in differ)
    agreement = 1 - len(differ) / len(verdicts)
    print(f"\n{len(verdicts)} candidates, agreement {agreement:.4%}; disagreements by kind: {dict(by_kind)}")
    for entry, kind, ours, theirs in differ[:40]:
        print(f"  {entry}: {kind}: ours {ours}, BFCL {theirs}")
    assert len(verdicts) >= 20000
    assert agreement >= 0.995, by_kind
    assert set(by_kind) <= set(ON_PURPOSE), {k: v for k, v in by_kind.items() if k not in ON_PURPOSE}


def test_every_kind_is_exercised_and_both_verdicts_occur(verdicts: list[tuple[str, str, bool, bool]]) -> None:
    kinds = Counter(kind for _, kind, _, _ in verdicts)
    passed = Counter(kind for _, kind, _, theirs in verdicts if theirs)
    assert all(count >= 5 for count in kinds.values()), kinds
    assert passed["reference"] >= 0.98 * kinds["reference"] and passed["wrong name"] == 0
    assert 0 < sum(passed.values()) < len(verdicts)
