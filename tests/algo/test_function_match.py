"""Structural function-call matching: values, optional parameters, parallel calls."""

import pytest

from rest_megatron.algo.function_match import (
    allowed_call_mismatch,
    allowed_calls_mismatch,
    allowed_value_mismatch,
    call_matches,
    calls_match,
    normalize_answer_string,
    schemas_by_name,
    values_match,
)
from rest_megatron.algo.tool_calls import parse_tool_calls


@pytest.mark.parametrize(
    "pred, exp, ok",
    [
        (1, 1.0, True),
        (1.0, 1, True),
        (2, 2.5, False),
        (True, 1, False),
        (1, True, False),
        (True, True, True),
        ("1", 1, False),
        ("Paris", "Paris", True),
        ("paris", "Paris", False),
        (None, None, True),
        (None, 0, False),
        ([1, 2.0], [1.0, 2], True),
        ([1, 2], [2, 1], False),
        ([1], [1, 1], False),
        ((1, 2), [1, 2], True),
        ({"a": 1, "b": [1.0]}, {"b": [1], "a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": {"x": 1}}, {"a": {"x": 2}}, False),
        ("x", ["x"], False),
    ],
)
def test_values_match(pred, exp, ok):
    assert values_match(pred, exp) is ok


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "default": 1},
                "units": {"type": "string"},
            },
            "required": ["city"],
        },
    },
}
TIME = {"name": "get_time", "parameters": {"properties": {"tz": {"type": "string"}}, "required": ["tz"]}}


def test_schemas_by_name_accepts_wrapped_bare_and_mapping_forms():
    schemas = schemas_by_name([WEATHER, TIME])
    assert set(schemas) == {"get_weather", "get_time"} and schemas["get_time"]["required"] == ["tz"]
    assert schemas_by_name({"get_time": TIME})["get_time"]["required"] == ["tz"]
    assert schemas_by_name(None) == {}


def test_call_matching_with_and_without_schema():
    schema = schemas_by_name([WEATHER])["get_weather"]
    expected = {"name": "get_weather", "arguments": {"city": "Paris", "units": "metric", "days": 1}}
    full = {"name": "get_weather", "arguments": {"city": "Paris", "units": "metric", "days": 1.0}}
    assert call_matches(full, expected) and call_matches(full, expected, schema)
    # Optional `units` omitted: fine with the schema, a mismatch without one.
    omits_units = {"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}
    assert call_matches(omits_units, expected, schema)
    assert not call_matches(omits_units, expected)
    # Omitting optional `days` is fine when the expected value is its default (1) ...
    omits_days = {"name": "get_weather", "arguments": {"city": "Paris", "units": "metric"}}
    assert call_matches(omits_days, expected, schema)
    # ... but not when the expected value differs from the default.
    assert not call_matches(
        omits_days, {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, schema
    )
    # The required parameter can never be omitted.
    assert not call_matches(
        {"name": "get_weather", "arguments": {"days": 1}},
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        schema,
    )
    # An extra optional parameter passes only when it carries the schema default.
    short = {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert call_matches({"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}, short, schema)
    assert not call_matches({"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}, short, schema)
    assert not call_matches(
        {"name": "get_weather", "arguments": {"city": "Paris", "units": "k"}}, short, schema
    )
    assert not call_matches(
        {"name": "get_weather", "arguments": {"city": "Paris", "bogus": 1}}, short, schema
    )
    # Names must agree; "parameters" is read like "arguments".
    assert not call_matches({"name": "get_time", "arguments": {"city": "Paris"}}, short)
    assert call_matches({"name": "get_weather", "parameters": {"city": "Paris"}}, short)


def test_parallel_calls_are_order_insensitive_and_one_to_one():
    a = {"name": "get_time", "arguments": {"tz": "CET"}}
    b = {"name": "get_time", "arguments": {"tz": "UTC"}}
    c = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert calls_match([c, b, a], [a, b, c])
    assert not calls_match([c, b, a], [a, b, c], ordered=True)
    assert calls_match([a, b, c], [a, b, c], ordered=True)
    assert not calls_match([a, a, c], [a, b, c])  # a cannot stand in for both a and b
    assert not calls_match([a, b], [a, b, c])
    assert calls_match([], [])


def test_matching_needs_an_augmenting_path():
    # y and z are optional without defaults. p0 = {x} matches e0 = {x, y} and e1 = {x, z} (omissions);
    # p1 = {x, y} matches only e0. A greedy pairing p0-e0 leaves p1 nothing; the matching moves p0 to e1.
    schema = [{"name": "f", "parameters": {"properties": {"x": {}, "y": {}, "z": {}}, "required": ["x"]}}]
    p0 = {"name": "f", "arguments": {"x": 1}}
    p1 = {"name": "f", "arguments": {"x": 1, "y": 1}}
    e0 = {"name": "f", "arguments": {"x": 1, "y": 1}}
    e1 = {"name": "f", "arguments": {"x": 1, "z": 1}}
    f = schemas_by_name(schema)["f"]
    assert call_matches(p0, e0, f) and call_matches(p0, e1, f)
    assert call_matches(p1, e0, f) and not call_matches(p1, e1, f)
    assert calls_match([p0, p1], [e0, e1], tools=schema)
    assert calls_match([p1, p0], [e1, e0], tools=schema)
    assert not calls_match([p1, p1], [e0, e1], tools=schema)


def test_parsed_calls_match_dicts():
    parsed = parse_tool_calls(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2.0}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>'
    )
    expected = [
        {"name": "get_time", "arguments": {"tz": "CET"}},
        {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}},
    ]
    assert calls_match(list(parsed.calls), expected, tools=[WEATHER, TIME])


# --- answer keys with allowed values (BFCL's possible answers) ----------------------------------------------

AREA = {
    "name": "area",
    "parameters": {
        "type": "dict",
        "required": ["base", "height"],
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
            "exact": {"type": "boolean"},
            "dims": {"type": "array", "items": {"type": "string"}},
            "box": {"type": "dict", "properties": {"w": {"type": "integer"}, "h": {"type": "integer"}}},
        },
    },
}
AREA_KEY = {
    "area": {
        "base": [10],
        "height": [5.0, 5.5],
        "unit": ["m", "meters", ""],
        "exact": ["", True],
        "dims": [["x", "y"], ""],
        "box": [{"w": [1], "h": [2, ""]}, ""],
    }
}


@pytest.mark.parametrize(
    "value, allowed, spec, ok",
    [
        (5, [5.0], {"type": "float"}, True),  # int where a float is declared
        (5.0, [5], {"type": "integer"}, False),  # but no float where an integer is declared
        (True, [1], {"type": "integer"}, False),  # bool is never a number
        ("April 1, 2024", ["april 1 2024"], {"type": "string"}, True),  # lenient strings
        ("New York", ["new-york", "NYC"], {"type": "string"}, True),
        ("Boston", ["new york"], {"type": "string"}, False),
        ("my_var", ["my_var"], {"type": "integer"}, True),  # the answer key's type wins (a variable name)
        ("", ["x", ""], {"type": "string"}, True),  # an explicit "" where "" is allowed
        (["X", "y"], [["x", "y"]], {"type": "array", "items": {"type": "string"}}, True),
        (["y", "x"], [["x", "y"]], {"type": "array", "items": {"type": "string"}}, False),  # lists keep order
        ({"w": 1}, [{"w": [1], "h": [2, ""]}], {"type": "dict"}, True),  # dicts are answer keys themselves
        ({"w": 1, "h": 3}, [{"w": [1], "h": [2, ""]}], {"type": "dict"}, False),
        ({"h": 2}, [{"w": [1], "h": [2, ""]}], {"type": "dict"}, False),  # w is not optional
        ({"w": 1, "d": 0}, [{"w": [1]}], {"type": "dict"}, False),
        (None, [None, ""], {"type": "string"}, True),
    ],
)
def test_allowed_value_mismatch(value, allowed, spec, ok):
    assert (allowed_value_mismatch(value, allowed, spec) is None) is ok


def test_normalize_answer_string():
    assert normalize_answer_string("San Francisco, CA") == normalize_answer_string("san_francisco ca")
    assert normalize_answer_string("it's") == 'it"s'


def test_allowed_call_mismatch_reasons():
    schema = AREA["parameters"]
    assert (
        allowed_call_mismatch({"name": "area", "arguments": {"base": 10, "height": 5}}, AREA_KEY, schema)
        is None
    )
    full = {
        "base": 10,
        "height": 5.5,
        "unit": "Meters",
        "exact": True,
        "dims": ["x", "y"],
        "box": {"w": 1, "h": 2},
    }
    assert allowed_call_mismatch({"name": "area", "arguments": full}, AREA_KEY, schema) is None
    cases = {
        "called 'volume'": {"name": "volume", "arguments": {"base": 10, "height": 5}},
        "required argument 'height' is missing": {"name": "area", "arguments": {"base": 10}},
        "argument 'base' is 11": {"name": "area", "arguments": {"base": 11, "height": 5}},
        "unexpected argument 'color'": {
            "name": "area",
            "arguments": {"base": 10, "height": 5, "color": "red"},
        },
        "argument 'exact' is False": {"name": "area", "arguments": {"base": 10, "height": 5, "exact": False}},
    }
    for expected_reason, call in cases.items():
        reason = allowed_call_mismatch(call, AREA_KEY, schema)
        assert reason is not None and expected_reason in reason, (expected_reason, reason)
    # An answer-key argument without "" must be given even when the schema calls it optional.
    key = {"area": {"base": [10], "height": [5], "unit": ["m"]}}
    assert "argument 'unit' is missing" in allowed_call_mismatch(
        {"name": "area", "arguments": {"base": 10, "height": 5}}, key, schema
    )
    # Without a schema only the answer key is checked.
    assert allowed_call_mismatch({"name": "area", "arguments": {"base": 10, "height": 5}}, AREA_KEY) is None


def test_allowed_calls_mismatch_pairs_parallel_calls_in_any_order():
    key = [{"area": {"base": [1], "height": [1.0]}}, {"area": {"base": [2], "height": [2.0]}}]
    one = {"name": "area", "arguments": {"base": 1, "height": 1}}
    two = {"name": "area", "arguments": {"base": 2, "height": 2}}
    assert allowed_calls_mismatch([two, one], key, tools=[AREA]) is None
    assert "expected 2 call(s), got 3" in allowed_calls_mismatch([two, one, one], key, tools=[AREA])
    assert "expected call 2 matches no predicted call" in allowed_calls_mismatch(
        [one, one], key, tools=[AREA]
    )
    # One expected call: the reason is that call's own.
    wrong = {"name": "volume", "arguments": {"base": 1, "height": 1}}
    assert allowed_calls_mismatch([wrong], key[:1], tools=[AREA]) == "called 'volume', expected 'area'"
    parsed = parse_tool_calls(
        '<tool_call>{"name": "area", "arguments": {"base": 2, "height": 2}}</tool_call>\n'
        '<tool_call>{"name": "area", "arguments": {"base": 1, "height": 1.0}}</tool_call>'
    )
    assert allowed_calls_mismatch(list(parsed.calls), key, tools=[AREA]) is None
