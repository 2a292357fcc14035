"""The tiny tool task: reproducible, disjoint splits, and ground truth that the real tools reproduce."""

from __future__ import annotations

import pytest

from rest_megatron.data.tiny_task import KINDS, demonstration, make_tiny_task
from tools_sandbox.tools.registry import SERVICE_TOOLS


def test_same_seed_same_questions_and_the_splits_do_not_overlap() -> None:
    assert make_tiny_task(5, 40) == make_tiny_task(5, 40)
    train = {s.question for s in make_tiny_task(0, 2048, "train")}
    held_out = {s.question for s in make_tiny_task(0, 64, "eval")}
    assert len(held_out) > 45 and not held_out & train


def test_both_kinds_appear_and_need_one_to_three_calls() -> None:
    samples = make_tiny_task(1, 200)
    lookups = [s for s in samples if s.calls[0]["name"] == "lookup_price"]
    assert 60 < len(lookups) < 140
    assert all(1 <= len(s.calls) <= 3 for s in samples)
    assert {tuple(t["function"]["name"] for t in s.tools) for s in lookups} == {
        ("lookup_price", "calculator")
    }
    assert all(s.calls[0]["name"] == "calculator" for s in make_tiny_task(1, 50, kinds=("arithmetic",)))


def test_running_the_gold_calls_on_the_real_tools_gives_the_results_and_answer() -> None:
    for sample in make_tiny_task(2, 100):
        outputs = []
        for call in sample.calls:
            ok, output, error = SERVICE_TOOLS[call["name"]](call["arguments"])
            assert ok, error
            outputs.append(output)
        assert outputs == sample.results and outputs[-1] == sample.answer, sample.question


def test_demonstration_is_one_call_per_turn_then_the_answer() -> None:
    sample = next(s for s in make_tiny_task(3, 50) if len(s.calls) == 3)
    messages = demonstration(sample)
    assert [m["role"] for m in messages[2:]] == ["assistant", "tool"] * 3 + ["assistant"]
    assert messages[-1]["content"] == f"The answer is {sample.answer}."


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kinds"):
        make_tiny_task(0, 1, kinds=("trivia",))
    assert KINDS == ("arithmetic", "price")
