"""The Qwen/Hermes tool-call parser: well-formed turns, every kind of malformed call, and never raising."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_megatron.algo.tool_calls import ParsedResponse, ToolCall, ToolCallError, parse_tool_calls


def test_hermes_turn_with_two_blocks():
    text = (
        "<think>I need the weather and the time.</think>\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>'
    )
    p = parse_tool_calls(text)
    assert p.think == "I need the weather and the time."
    assert [(c.name, c.arguments, c.block) for c in p.calls] == [
        ("get_weather", {"city": "Paris", "days": 2}, 0),
        ("get_time", {"tz": "CET"}, 1),
    ]
    assert p.errors == () and p.answer is None and p.num_blocks == 2
    assert p.calls[0].as_dict() == {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}


def test_toolrl_block_with_one_call_per_line_and_parameters_key():
    text = (
        "<think>two calls</think>\n<tool_call>\n"
        '{"name": "a", "parameters": {"x": 1}}\n\n{"name": "b", "parameters": {}}\n'
        "</tool_call>\n<response>done</response>"
    )
    p = parse_tool_calls(text)
    assert [(c.name, c.arguments, c.block) for c in p.calls] == [("a", {"x": 1}, 0), ("b", {}, 0)]
    assert p.answer == "done" and p.errors == ()


def test_json_list_and_string_arguments_and_pretty_printed_json():
    text = (
        '<tool_call>[{"name": "a", "arguments": "{\\"q\\": [1, 2]}"}, {"name": "b"}]</tool_call>'
        '<tool_call>\n{\n  "name": "c",\n  "arguments": {"k": null}\n}\n</tool_call>'
    )
    p = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in p.calls] == [("a", {"q": [1, 2]}), ("b", {}), ("c", {"k": None})]
    assert p.errors == ()


@pytest.mark.parametrize(
    "body, message",
    [
        ("{bad json", "not valid JSON"),
        ("", "empty <tool_call> block"),
        ("[]", "empty list"),
        ('["get_weather"]', "must be a JSON object, got str"),
        ('{"arguments": {}}', 'non-empty string "name"'),
        ('{"name": "  ", "arguments": {}}', 'non-empty string "name"'),
        ('{"name": 3, "arguments": {}}', 'non-empty string "name"'),
        ('{"name": "f", "arguments": [1, 2]}', "must be a JSON object"),
        ('{"name": "f", "arguments": "not json"}', "string that is not valid JSON"),
        ("[" * 50_000, "not valid JSON"),  # deep nesting: RecursionError inside json, reported not raised
    ],
)
def test_malformed_calls_become_errors(body, message):
    p = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert p.calls == ()
    assert len(p.errors) == 1 and message in p.errors[0].message
    assert p.errors[0].block == 0 and p.num_blocks == 1


def test_one_bad_line_does_not_hide_the_good_ones():
    p = parse_tool_calls(
        '<tool_call>\n{"name": "a", "arguments": {}}\n{"name": "b", "arguments": \n</tool_call>'
    )
    assert [c.name for c in p.calls] == ["a"]
    assert len(p.errors) == 1 and p.errors[0].raw == '{"name": "b", "arguments":'


def test_unclosed_block_is_an_error_and_not_part_of_the_answer():
    p = parse_tool_calls('Let me call it. <tool_call>{"name": "f", "arguments": {}}')
    assert p.calls == () and p.num_blocks == 1
    assert (
        "unclosed <tool_call>" in p.errors[0].message and p.errors[0].raw == '{"name": "f", "arguments": {}}'
    )
    assert p.answer == "Let me call it."


def test_calls_inside_think_are_not_calls():
    p = parse_tool_calls(
        '<think>maybe <tool_call>{"name": "x", "arguments": {}}</tool_call>?</think>The answer is 4.'
    )
    assert p.calls == () and p.errors == () and p.num_blocks == 0
    assert p.answer == "The answer is 4." and "<tool_call>" in p.think


@pytest.mark.parametrize(
    "text, think, answer",
    [
        ("reasoning only</think>\n42", "reasoning only", "42"),  # <think> prefilled by the chat template
        ("<think>never closed", "never closed", None),
        ("plain text", None, "plain text"),
        ("", None, None),
        ("<think></think>", "", None),
        ("<think>a</think> x <response> y </response> z", "a", "y"),
    ],
)
def test_think_and_answer(text, think, answer):
    p = parse_tool_calls(text)
    assert (p.think, p.answer) == (think, answer)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<tool_call>",
                "</tool_call>",
                "<think>",
                "</think>",
                "<response>",
                "</response>",
                '{"name": "f", "arguments": {"a": 1}}',
                '{"name":',
                "[",
                "]",
                "{",
                "}",
                "\n",
                '"',
                "\\",
            ]
        )
        | st.text(max_size=8),
        max_size=25,
    ).map("".join)
)
def test_never_raises_and_is_consistent(text):
    p = parse_tool_calls(text)
    assert isinstance(p, ParsedResponse)
    assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) and c.name for c in p.calls)
    assert all(isinstance(e, ToolCallError) and e.message for e in p.errors)
    # Every call is reported from a block that exists; well-formed calls survive a JSON round trip.
    assert all(0 <= c.block < p.num_blocks for c in p.calls)
    assert all(0 <= e.block < p.num_blocks for e in p.errors)
    for c in p.calls:
        json.dumps(c.as_dict())
