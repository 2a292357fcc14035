"""Rewards: ToolRL's rule reward by hand over its schedule, function and answer matching, the contract."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rest_megatron.algo.rewards import (
    answer_matches,
    get_reward,
    match_score,
    normalize_answer,
    reward_names,
    toolrl_format_ok,
)

GT_CALLS = (
    "<think>Need f and g.</think>\n<tool_call>\n"
    '{"name": "f", "parameters": {"a": 1, "b": "x"}}\n{"name": "g", "parameters": {}}\n</tool_call>'
)
PERFECT = (
    '<think>ok</think>\n<tool_call>\n{"name": "f", "arguments": {"a": 1.0, "b": "x"}}\n'
    '{"name": "g", "arguments": {}}\n</tool_call>'
)
PARTIAL = '<think>y</think><tool_call>\n{"name": "f", "arguments": {"a": 1.0, "c": 2}}\n</tool_call>'
MALFORMED = '<think>y</think><tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'
NO_CALL = "I would call f."


def test_match_score_by_hand():
    assert match_score(["a", "b"], ["a", "b"]) == 1.0
    assert match_score([], []) == 1.0
    assert match_score(["a"], []) == 0.0
    # multisets {a, a, b} and {a, b, c}: intersection 2, union 3 + 3 − 2 = 4 -> 0.5
    assert match_score(["a", "a", "b"], ["a", "b", "c"]) == 0.5
    assert match_score(["b", "a"], ["a", "b"]) == 1.0  # not equal as lists, equal as multisets


# ToolRL ranges under SCHEDULEREWARD (rlla.py): format max 2 − s/150 (floor 1), min −2 + 2s/150 (cap −1);
# correctness max 2 + s/150 (cap 3), min −2 − s/150 (floor −3):
#   s = 0: format [−2, 2], correctness [−2, 2]      s = 75: format [−1, 1.5], correctness [−2.5, 2.5]
#   s = 150 and later: format [−1, 1], correctness [−3, 3]
# PARTIAL against GT_CALLS (expected f(a=1, b="x"), g()): predicted f(a=1.0, c=2).
#   names: match_score([f, g], [f]) = 1/(2 + 1 − 1) = 0.5
#   f: keys match_score([a, b], [a, c]) = 1/3, values a: 1.0 == 1 -> +1, so 4/3;  g: no candidate
#   score = 0.5 + 4/3 = 11/6;  max = 1 + (1 + 2) + (1 + 0) = 5;  fraction 11/30
#   correctness = (max − min)·11/30 + min:  s=0: 4·11/30 − 2 = −0.533333;  s=75: 5·11/30 − 2.5 = −0.666667;
#                                            s=150: 6·11/30 − 3 = −0.8
TOOLRL_HAND = {
    # step: {response: (format, correctness)}
    0: {PERFECT: (2.0, 2.0), PARTIAL: (2.0, -0.533333), MALFORMED: (2.0, -2.0), NO_CALL: (-2.0, -2.0)},
    75: {PERFECT: (1.5, 2.5), PARTIAL: (1.5, -0.666667), MALFORMED: (1.5, -2.5), NO_CALL: (-1.0, -2.5)},
    150: {PERFECT: (1.0, 3.0), PARTIAL: (1.0, -0.8), MALFORMED: (1.0, -3.0), NO_CALL: (-1.0, -3.0)},
    300: {PERFECT: (1.0, 3.0), PARTIAL: (1.0, -0.8), MALFORMED: (1.0, -3.0), NO_CALL: (-1.0, -3.0)},
}


@pytest.mark.parametrize("step", sorted(TOOLRL_HAND))
def test_toolrl_by_hand_over_the_schedule(step):
    for response, (fmt, correct) in TOOLRL_HAND[step].items():
        total, parts = get_reward("toolrl")(response, GT_CALLS, step=step)
        assert parts["format"] == pytest.approx(fmt, abs=1e-6), response
        assert parts["correctness"] == pytest.approx(correct, abs=1e-6), response
        assert total == pytest.approx(fmt + correct, abs=1e-6)


def test_toolrl_unscheduled_constants_and_order_of_parallel_calls():
    # ToolRL without the schedule: format 1/0, correctness 3/−3. Swapped calls are not an exact match,
    # but the partial credit is full: names 1 (multisets), f 1 + 2, g 1 -> 5/5 -> 3.
    swapped = (
        '<think>t</think><tool_call>\n{"name": "g", "arguments": {}}\n'
        '{"name": "f", "arguments": {"b": "x", "a": 1}}\n</tool_call>'
    )
    params = dict(format_max=1.0, format_min=0.0, correct_max=3.0, correct_min=-3.0)
    assert get_reward("toolrl")(swapped, GT_CALLS, step=0, **params) == (
        4.0,
        {"format": 1.0, "correctness": 3.0},
    )
    # A wrong value: f's b = "y". names 1, f keys 1 + values 1 = 2, g 1: 4/5 -> 6·0.8 − 3 = 1.8
    wrong = swapped.replace('"x"', '"y"')
    assert get_reward("toolrl")(wrong, GT_CALLS, step=0, **params)[1]["correctness"] == pytest.approx(1.8)


def test_toolrl_answers_without_calls_and_format_rules():
    gt_response = "<think>easy</think>\n<response>Paris</response>"
    # No tool call expected: correctness 0 whatever the response; format needs think before response.
    assert get_reward("toolrl")("<think>t</think><response>Rome</response>", gt_response, step=150) == (
        1.0,
        {"format": 1.0, "correctness": 0.0},
    )
    assert (
        get_reward("toolrl")("<response>Rome</response><think>t</think>", gt_response, step=150)[1]["format"]
        == -1.0
    )
    gt_both = (
        '<think>a</think><tool_call>\n{"name": "f", "parameters": {}}\n</tool_call><response>r</response>'
    )
    assert toolrl_format_ok(
        '<think>a</think><tool_call>{"name": "f", "arguments": {}}</tool_call><response>r</response>', gt_both
    )
    assert not toolrl_format_ok("<think>a</think><response>r</response><tool_call>{}</tool_call>", gt_both)
    # Call-only ground truth: a response block is not allowed, and exactly one <tool_call> block.
    assert not toolrl_format_ok(PERFECT + "<response>x</response>", GT_CALLS)
    assert not toolrl_format_ok(PERFECT + PERFECT.split("</think>")[1], GT_CALLS)
    # Think-only ground truth: exactly one think block.
    assert toolrl_format_ok("  <think>a</think> answer ", "<think>b</think> other")
    assert not toolrl_format_ok("<think>a</think><think>b</think>", "<think>b</think>")
    # Two blocks: the format fails, the correctness reads the first block only (here the perfect calls).
    two = PERFECT + '\n<tool_call>{"name": "h", "arguments": {}}</tool_call>'
    assert get_reward("toolrl")(two, GT_CALLS, step=150) == (2.0, {"format": -1.0, "correctness": 3.0})


def test_toolrl_unclosed_call_and_bad_ground_truth():
    unclosed = '<think>t</think><tool_call>{"name": "f", "arguments": {"a": 1, "b": "x"}}'
    assert get_reward("toolrl")(unclosed, GT_CALLS, step=0)[1]["correctness"] == -2.0
    with pytest.raises(ValueError, match="ground-truth"):
        get_reward("toolrl")(PERFECT, "<tool_call>{oops</tool_call>", step=0)


def test_function_match_reward():
    gt = {"calls": [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]}
    good = (
        '<tool_call>{"name": "g", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "f", "arguments": {"a": 1.0}}</tool_call>'
    )
    assert get_reward("function_match")(good, gt) == (
        1.0,
        {"match": 1.0, "num_calls": 2.0, "num_errors": 0.0},
    )
    assert get_reward("function_match")(good, {**gt, "ordered": True})[0] == 0.0
    # Right calls plus a malformed one: no credit.
    assert get_reward("function_match")(good + "<tool_call>{</tool_call>", gt)[0] == 0.0
    assert get_reward("function_match")("no calls", {"calls": []})[0] == 1.0
    with pytest.raises(ValueError, match="calls"):
        get_reward("function_match")(good, [{"name": "f"}])


@pytest.mark.parametrize(
    "pred, expected, ok",
    [
        ("The Eiffel Tower!", "eiffel tower", True),
        ("an apple", "Apple", True),
        ("Paris, France", "Paris", False),
        ("1,000", 1000, True),
        ("It costs $1,234.50 in total.", 1234.5, True),
        ("42", "42.0", True),
        ("4.2", "42", False),
        ("4.2", 42, False),
        ("1,000", "1,000", True),
        ("The answer is 42.", "42", True),
        ("41", 42, False),
        ("no number", 3, False),
        ("3", True, False),
        ("true", True, True),
    ],
)
def test_answer_matches(pred, expected, ok):
    assert answer_matches(pred, expected) is ok


def test_answer_match_reward():
    assert normalize_answer("  The  Quick, brown fox. ") == "quick brown fox"
    assert get_reward("answer_match")("<think>6·7</think><response>42</response>", 42) == (
        1.0,
        {"match": 1.0, "has_answer": 1.0},
    )
    assert get_reward("answer_match")(r"so \boxed{12} and later \boxed{13}", ["13", "thirteen"])[0] == 1.0
    assert get_reward("answer_match")("<think>only thinking</think>", "x") == (
        0.0,
        {"match": 0.0, "has_answer": 0.0},
    )
    with pytest.raises(ValueError):
        get_reward("answer_match")("x", [])


# --------------------------------------------------------------------------------------------- contract

# Every registered reward needs an entry here: (ground truth, a response that must score above garbage).
EXAMPLES = {
    "toolrl": (GT_CALLS, PERFECT),
    "function_match": (
        {"calls": [{"name": "f", "arguments": {"a": 1, "b": "x"}}]},
        '<tool_call>{"name": "f", "arguments": {"a": 1, "b": "x"}}</tool_call>',
    ),
    "answer_match": ("42", "<think>t</think><response>42</response>"),
    "tool_trajectory": (
        {"calls": [{"name": "f", "arguments": {"a": 1}}], "answer": "42"},
        '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
    ),
}


@pytest.mark.parametrize("name", reward_names())
@settings(max_examples=80, deadline=None)
@given(
    garbage=st.lists(
        st.sampled_from(
            [
                "<tool_call>",
                "</tool_call>",
                "<think>",
                "</think>",
                "<response>",
                "</response>",
                '{"name": "f", "arguments": {"a": 1}}',
                "{",
                "\n",
                "42",
                "\\boxed{",
            ]
        )
        | st.text(max_size=6),
        max_size=16,
    ).map("".join),
    step=st.integers(0, 1000),
)
def test_contract_every_reward(name, garbage, step):
    """Plain data in, (finite float, {str: finite float}) out, never raising on a response; a good
    response beats any garbage that is not itself equally good."""
    assert name in EXAMPLES, f"add an example ground truth for the new reward {name!r}"
    gt, good = EXAMPLES[name]
    fn = get_reward(name)
    for response in (garbage, good):
        value, parts = fn(response, gt, step=step)
        assert isinstance(value, float) and math.isfinite(value)
        assert parts and all(
            isinstance(k, str) and isinstance(v, float) and math.isfinite(v) for k, v in parts.items()
        )
    assert fn(good, gt, step=step)[0] >= fn(garbage, gt, step=step)[0]


def test_unknown_reward_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: answer_match, function_match, tool_trajectory, toolrl"):
        get_reward("bleu")


def test_toolrl_strict_parameters_key_follows_rlla():
    # rlla.py reads pd_tool["parameters"]: "arguments" is no exact match, and a call under an expected
    # name that lacks "parameters" scores correct_min (its KeyError); another name only loses credit.
    params = dict(format_max=1.0, format_min=0.0, correct_max=3.0, correct_min=-3.0, accept_arguments=False)
    reward = get_reward("toolrl")
    assert reward(PERFECT, GT_CALLS, step=0, **params)[1]["correctness"] == -3.0
    assert reward(PERFECT, GT_CALLS, step=0, **{**params, "accept_arguments": True})[1]["correctness"] == 3.0
    as_parameters = PERFECT.replace('"arguments"', '"parameters"')
    assert reward(as_parameters, GT_CALLS, step=0, **params)[1]["correctness"] == 3.0
    # h is no expected name: names f, h vs f, g -> 1/3; f: keys 1 + values 2 -> 3 of max 5
    # -> 6·(10/3)/5 − 3 = 1
    other = as_parameters.replace('{"name": "g", "parameters": {}}', '{"name": "h", "arguments": {}}')
    assert reward(other, GT_CALLS, step=0, **params)[1]["correctness"] == pytest.approx(1.0)


def test_toolrl_step_origin_shifts_the_schedule():
    reward = get_reward("toolrl")
    assert reward(PERFECT, GT_CALLS, step=74, step_origin=1) == reward(PERFECT, GT_CALLS, step=75)
    assert reward(PERFECT, GT_CALLS, step=0, step_origin=1)[1]["format"] == pytest.approx(2 - 1 / 150)
