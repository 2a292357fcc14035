"""The multi-turn tool-use reward on gold, partial, malformed and empty trajectories of the tiny task."""

from __future__ import annotations

import json

import pytest

from rest_megatron.algo.rewards import get_reward
from rest_megatron.data.tiny_task import make_tiny_task


def _call_turn(call: dict) -> str:
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


@pytest.fixture
def sample():
    return next(s for s in make_tiny_task(3, 50) if len(s.calls) == 2)


def _score(turns, sample):
    truth = {"calls": sample.calls, "answer": sample.answer}
    return get_reward("tool_trajectory")(turns, truth, tools=sample.tools)


def test_gold_trajectory_gets_the_maximum(sample) -> None:
    turns = [_call_turn(c) for c in sample.calls] + [f"The answer is {sample.answer}."]
    assert _score(turns, sample) == (3.0, {"format": 1.0, "calls": 1.0, "answer": 1.0})


def test_partial_calls_wrong_answer_and_malformed_json(sample) -> None:
    first = _call_turn(sample.calls[0])
    assert _score([first, "The answer is 0."], sample) == (1.5, {"format": 1.0, "calls": 0.5, "answer": 0.0})
    broken = '<tool_call>\n{"name": "calculator", "arguments": {"expression": \n</tool_call>'
    total, parts = _score([broken, f"The answer is {sample.answer}."], sample)
    assert parts == {"format": -1.0, "calls": -1.0, "answer": 1.0} and total == -1.0


def test_no_turns_and_extra_calls(sample) -> None:
    assert _score([], sample)[1] == {"format": -1.0, "calls": -1.0, "answer": 0.0}
    # Answering without the expected calls fails the format too, so skipping the tools never beats a
    # well-formed call with a wrong argument (-2 against at least 1).
    assert _score([f"The answer is {sample.answer}."], sample) == (
        -1.0,
        {"format": -1.0, "calls": -1.0, "answer": 1.0},
    )
    wrong = dict(sample.calls[0], arguments={k: "0" for k in sample.calls[0]["arguments"]})
    assert _score([_call_turn(wrong), "The answer is 0."], sample)[0] == 1.0
    turns = [_call_turn(c) for c in sample.calls * 2] + [f"The answer is {sample.answer}."]
    assert _score(turns, sample)[1]["calls"] == pytest.approx(1.0 - 0.25 * 2 / 2)
