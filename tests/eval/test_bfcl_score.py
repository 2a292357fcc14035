"""BFCL's own answers, written as model output, score 100% under BFCL's checker; wrong ones score 0.

The answers are rendered the way a Qwen-style model emits calls (`<tool_call>{"name", "arguments"}
</tool_call>`) and go through `single_turn_mismatch`, the path a real generation takes (BFCL's decoding,
format check and `ast_checker`). Two renderings per entry: the first allowed value of every argument,
and every omittable argument left out. Java and JavaScript answers are sent as the strings BFCL's
function-calling prompt asks for (the docs say "in string representation").

A handful of BFCL answer keys contradict their own function docs (a required argument with no allowed
value, an answer argument the doc does not have); no output can pass those under BFCL's rules, so they
are listed by `answer_key_defects` and left out, and their number is pinned small.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from rest_megatron.eval.bfcl_data import CATEGORY_FILES, IRRELEVANCE, MULTI_TURN, RELEVANCE, load_category
from rest_megatron.eval.bfcl_score import single_turn_mismatch
from tests.eval.conftest import needs_bfcl

pytestmark = needs_bfcl
ANSWER_KEY_CATEGORIES = [c for c in CATEGORY_FILES if c not in IRRELEVANCE | RELEVANCE | MULTI_TURN]
MAX_DEFECTS = 8  # 6 entries in bfcl-eval 2026.3.23, all in live_simple and live_multiple
JAVA_UNRENDERED = {
    "simple_java_36": "an Object[] mixing strings and numbers: BFCL's converter keeps the quotes of "
    "string elements",
    "simple_java_65": "a String[] of key/value pairs with booleans: same",
    "simple_java_81": "a String argument BFCL's converter unquotes ('GC pause' -> 'C paus') when no "
    "quotes are sent",
}
"""Java answers our test renderer cannot write as a literal that BFCL's Java converter parses back to the
key (the model would meet the same converter; these are not our checker's verdicts, which are BFCL's)."""


def _params(entry: Any, name: str) -> dict[str, Any]:
    return next(f["parameters"] for f in entry.checker_functions if f["name"] == name)


def _java(value: Any, top: bool = False) -> str:
    """A Java source literal (what BFCL's Java converter parses back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if top else json.dumps(value)
    if isinstance(value, list):
        return f"new ArrayList<>(Arrays.asList({', '.join(_java(v) for v in value)}))"
    if isinstance(value, dict):
        puts = " ".join(f"put({json.dumps(k)}, {_java(v)});" for k, v in value.items())
        return f"new HashMap<>() {{{{ {puts} }}}}"
    return str(value)


def _java_element(value: Any, java_type: str | None) -> str:
    # BFCL converts each element with the doc's item type: a String element is taken verbatim (no quotes)
    if java_type == "String" and isinstance(value, str):
        return value
    if java_type == "long" and isinstance(value, int):
        return f"{value}L"
    return _java(value)


def _literal(value: Any, category: str, spec: dict[str, Any]) -> Any:
    """Java/JavaScript answers as the string a model would send (BFCL converts them back to values)."""
    if not category.endswith(("_java", "_javascript")) or isinstance(value, str):
        return value
    if category.endswith("_java"):
        java_type, item_type = spec.get("type"), (spec.get("items") or {}).get("type")
        if java_type in ("Array", "ArrayList") and isinstance(value, list):
            elements = ", ".join(_java_element(v, item_type) for v in value)
            return (
                f"new Object[]{{{elements}}}"
                if java_type == "Array"
                else f"new ArrayList<>(Arrays.asList({elements}))"
            )
        return _java_element(value, java_type) if java_type == "long" else _java(value, top=True)
    return json.dumps(value)


def _value(candidate: Any, spec: dict[str, Any] | None, omit: bool) -> Any:
    """A concrete value from an allowed one: dict-typed answers are answer keys themselves."""
    spec = spec or {}
    if isinstance(candidate, dict) and spec.get("type") in ("dict", "HashMap"):
        return {
            k: next(v for v in allowed if v != "")
            for k, allowed in candidate.items()
            if any(v != "" for v in allowed) and not (omit and "" in allowed)
        }
    if isinstance(candidate, list) and spec.get("type") == "array":
        return [_value(c, spec.get("items"), omit) for c in candidate]
    return candidate


def reference_calls(entry: Any, omit: bool) -> list[dict[str, Any]]:
    """The answer key as calls: first allowed values; with `omit`, optional arguments left out."""
    calls = []
    for expected in entry.answer:
        ((name, key),) = expected.items()
        params = _params(entry, name)
        required = set(params.get("required", []))
        arguments = {}
        for argument, allowed in key.items():
            values = [v for v in allowed if v != ""]
            if (omit and "" in allowed and argument not in required) or argument not in params["properties"]:
                continue
            if values:
                spec = params["properties"][argument]
                arguments[argument] = _literal(_value(values[0], spec, omit), entry.category, spec)
            elif argument in required:  # BFCL's way of saying "pass an empty string"
                arguments[argument] = ""
        calls.append({"name": name, "arguments": arguments})
    return calls


def as_text(calls: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls)


def answer_key_defects(entry: Any) -> list[str]:
    """Where the answer key contradicts the function doc (no output can pass)."""
    defects = []
    for expected in entry.answer:
        ((name, key),) = expected.items()
        params = _params(entry, name)
        for argument in params.get("required", []):
            if not key.get(argument):
                defects.append(f"required {argument!r} has no allowed value")
        defects += [
            f"answer argument {a!r} is not in the doc"
            for a, allowed in key.items()
            if a not in params["properties"] and "" not in allowed
        ]
    return defects


@pytest.fixture(scope="module")
def categories() -> dict[str, list[Any]]:
    return {category: load_category(category) for category in CATEGORY_FILES if category not in MULTI_TURN}


@pytest.mark.parametrize("category", ANSWER_KEY_CATEGORIES)
def test_ground_truth_scores_100_percent(categories: dict[str, list[Any]], category: str) -> None:
    entries = [e for e in categories[category] if not answer_key_defects(e) and e.id not in JAVA_UNRENDERED]
    assert len(entries) >= len(categories[category]) - MAX_DEFECTS and entries
    failures = [
        (entry.id, omit, reason)
        for entry in entries
        for omit in (False, True)
        if (reason := single_turn_mismatch(entry, as_text(reference_calls(entry, omit)))) is not None
    ]
    assert not failures, failures[:5]


def test_answer_key_defects_are_few(categories: dict[str, list[Any]]) -> None:
    defective = {
        e.id: answer_key_defects(e)
        for c in ANSWER_KEY_CATEGORIES
        for e in categories[c]
        if answer_key_defects(e)
    }
    assert len(defective) <= MAX_DEFECTS, defective


@pytest.mark.parametrize("category", sorted(IRRELEVANCE | RELEVANCE))
def test_relevance_categories_score_whether_a_call_was_made(
    categories: dict[str, list[Any]], category: str
) -> None:
    no_call = "None of the functions can do that."
    for entry in categories[category]:
        wants_call = category in RELEVANCE
        if entry.functions:  # a few live_irrelevance entries offer no function at all
            call = as_text([{"name": entry.functions[0]["name"], "arguments": {}}])
            assert (single_turn_mismatch(entry, call) is None) is wants_call, entry.id
        assert (single_turn_mismatch(entry, no_call) is None) is not wants_call, entry.id
    # A malformed call is no call (BFCL: the output does not decode).
    assert single_turn_mismatch(categories["irrelevance"][0], "<tool_call>{oops</tool_call>") is None


def _mutations(entry: Any, calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Wrong outputs derived from a right one: each must fail."""
    out = {
        "wrong function name": [dict(calls[0], name=calls[0]["name"] + "_v2"), *calls[1:]],
        "extra call": [*calls, calls[0]],
        "missing call": calls[1:] if len(calls) > 1 else [],
    }
    first = calls[0]
    ((_, key),) = entry.answer[0].items()
    required = _params(entry, first["name"]).get("required", [])
    if required and required[0] in first["arguments"]:
        out["missing required argument"] = [
            dict(first, arguments={k: v for k, v in first["arguments"].items() if k != required[0]}),
            *calls[1:],
        ]
    for argument, value in first["arguments"].items():
        if isinstance(value, str) and value:
            # BFCL's Java/JS converters search for a literal inside the text, so a prefix is not wrong there
            wrong: Any = (
                "zz_not_the_answer" if entry.category.endswith(("_java", "_javascript")) else "zz" + value
            )
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            wrong = value + 7919
        else:
            continue
        mutated = copy.deepcopy(calls)
        mutated[0]["arguments"][argument] = wrong
        out["wrong value"] = mutated
        break
    return out


@pytest.mark.parametrize("category", ANSWER_KEY_CATEGORIES)
def test_wrong_outputs_score_zero(categories: dict[str, list[Any]], category: str) -> None:
    seen: set[str] = set()
    for entry in categories[category]:
        if answer_key_defects(entry) or entry.id in JAVA_UNRENDERED:
            continue
        for kind, calls in _mutations(entry, reference_calls(entry, omit=False)).items():
            seen.add(kind)
            reason = single_turn_mismatch(entry, as_text(calls))
            assert reason, f"{entry.id}: {kind} passed: {calls}"
        good = as_text(reference_calls(entry, omit=False))
        # BFCL's Qwen decoder skips a block that is not JSON and judges the rest
        assert single_turn_mismatch(entry, good + "\n<tool_call>\n{broken\n</tool_call>") is None
        assert single_turn_mismatch(entry, "I would call a function here.")
    assert {"wrong function name", "extra call", "wrong value", "missing required argument"} <= seen


def test_failure_reasons_are_bfcls(categories: dict[str, list[Any]]) -> None:
    entry = categories["simple"][0]  # calculate_triangle_area(base=10, height=5, unit="units" or omitted)
    right = reference_calls(entry, omit=True)
    assert single_turn_mismatch(entry, as_text(right)) is None
    cases = {
        "simple_function_checker:wrong_func_name": [dict(right[0], name="triangle_area")],
        "value_error:others": [dict(right[0], arguments={"base": 11, "height": 5})],
        "simple_function_checker:missing_required": [dict(right[0], arguments={"base": 10})],
        "simple_function_checker:wrong_count": right * 2,
        "simple_function_checker:unexpected_param": [
            dict(right[0], arguments={"base": 10, "height": 5, "color": "red"})
        ],
        "type_error:simple": [dict(right[0], arguments={"base": "10", "height": 5})],
    }
    for expected, calls in cases.items():
        assert expected in single_turn_mismatch(entry, as_text(calls))
    assert "Failed to decode" in single_turn_mismatch(entry, '<tool_call>\n["not", "a call"]\n</tool_call>')


def test_prompting_mode_replies_are_decoded_as_bfcl_decodes_them(categories: dict[str, list[Any]]) -> None:
    entry = categories["simple"][0]
    assert single_turn_mismatch(entry, "[calculate_triangle_area(base=10, height=5)]", "prompting") is None
    assert single_turn_mismatch(entry, "calculate_triangle_area(base=10, height=5)", "prompting") is None
    assert "value_error" in single_turn_mismatch(
        entry, "[calculate_triangle_area(base=11, height=5)]", "prompting"
    )
    assert "Failed to decode" in single_turn_mismatch(entry, "I would compute the area.", "prompting")
    irrelevant = categories["irrelevance"][0]
    assert single_turn_mismatch(irrelevant, "I cannot help with that.", "prompting") is None
    assert single_turn_mismatch(irrelevant, f"[{irrelevant.functions[0]['name']}()]", "prompting") is not None
