"""Tool schemas of every dialect come out as OpenAI-style JSON schema."""

from __future__ import annotations

import re

import pytest

from rest_megatron.data.formats.base import RecordError
from rest_megatron.data.formats.schema import JSON_TYPES, function_schema, function_schemas, type_spec


@pytest.mark.parametrize(
    "raw, spec, optional",
    [
        ("dict", {"type": "object"}, False),
        ("float", {"type": "number"}, False),
        ("tuple", {"type": "array"}, False),
        ("any", {"type": "string"}, False),
        ("String", {"type": "string"}, False),
        ("HashMap", {"type": "object"}, False),
        ("long", {"type": "integer"}, False),
        ("Boolean", {"type": "boolean"}, False),
        ("str, optional", {"type": "string"}, True),
        ("int, optional", {"type": "integer"}, True),
        ("List[int]", {"type": "array", "items": {"type": "integer"}}, False),
        (
            "List[List[str]]",
            {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            False,
        ),
        ("Dict[str, Any]", {"type": "object"}, False),
        ("Optional[float]", {"type": "number"}, True),
        ("Union[List[dict], dict]", {"type": "array", "items": {"type": "object"}}, False),
        ("Union[str, None]", {"type": "string"}, True),
        ("Tuple[int, int]", {"type": "array"}, False),
        ("", {}, False),
        (["string", "null"], {"type": ["string", "null"]}, False),
    ],
)
def test_type_names_map_to_json_schema(raw: object, spec: dict, optional: bool) -> None:
    assert type_spec(raw) == (spec, optional)
    for kind in [spec.get("type")] if isinstance(spec.get("type"), str) else []:
        assert kind in JSON_TYPES


@pytest.mark.parametrize("raw", ["Callable", "function", "List[Widget]", 3])
def test_unknown_types_are_rejected_not_guessed(raw: object) -> None:
    with pytest.raises(RecordError) as err:
        type_spec(raw)
    assert err.value.reason == "bad_tool_schema"


def test_bfcl_dialect_nested_and_cleaned() -> None:
    tool = {
        "name": "f",
        "description": "d",
        "parameters": {
            "type": "dict",
            "required": ["a"],
            "optional": ["b"],
            "properties": {
                "a": {
                    "type": "dict",
                    "description": "x",
                    "properties": {"n": {"type": "float"}},
                    "required": ["n"],
                },
                "b": {"type": "array", "items": {"type": "tuple"}, "optional": True, "default": []},
            },
        },
    }
    assert function_schema(tool) == {
        "name": "f",
        "description": "d",
        "parameters": {
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {
                    "type": "object",
                    "description": "x",
                    "properties": {"n": {"type": "number"}},
                    "required": ["n"],
                },
                "b": {"type": "array", "items": {"type": "array"}, "default": []},
            },
        },
    }


def test_xlam_flat_map_required_rule() -> None:
    params = function_schema(
        {
            "name": "g",
            "parameters": {
                "must": {"type": "str", "description": "no default"},
                "example": {"type": "str", "default": "game"},
                "maybe": {"type": "int, optional", "default": ""},
            },
        }
    )["parameters"]
    assert params["required"] == ["must"]
    assert params["properties"]["maybe"] == {"type": "integer"}  # "" is no integer default: dropped
    assert params["properties"]["example"]["default"] == "game"


def test_a_flat_parameter_named_type_is_not_mistaken_for_a_schema() -> None:
    params = function_schema({"name": "h", "parameters": {"type": {"type": "str", "description": "kind"}}})[
        "parameters"
    ]
    assert params == {
        "type": "object",
        "properties": {"type": {"type": "string", "description": "kind"}},
        "required": ["type"],
    }


def test_wrapped_tools_and_errors() -> None:
    wrapped = {
        "type": "function",
        "function": {"name": "w", "parameters": {"type": "object", "properties": {}}},
    }
    assert function_schema(wrapped)["name"] == "w"
    for bad, reason in (
        ([{"name": "a"}, {"name": "a"}], "declare ['a'] more than once"),
        ([{"description": "nameless"}], "has no name"),
        (
            [{"name": "r", "parameters": {"type": "dict", "properties": {}, "required": ["x"]}}],
            "not among its properties",
        ),
        ("not a list", "must be a list"),
    ):
        with pytest.raises(RecordError, match=re.escape(reason)):
            function_schemas(bad)
