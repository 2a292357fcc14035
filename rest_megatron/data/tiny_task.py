"""The tiny tool-use task: arithmetic questions that need 1–3 calculator calls, generated from a seed.

Each sample has the chat messages of the prompt, the tool schemas the model may call, the ground-truth
calls in order, and the final answer. `demonstration` renders the gold trajectory (calls, tool
results, answer) as chat messages for the SFT warm start. Train and eval splits come from disjoint
seeds, so the held-out split never overlaps the training questions.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass, field
from typing import Any

CALCULATOR_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression with + - * / and parentheses.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. (3 + 4) * 2"}},
            "required": ["expression"],
        },
    },
}

SYSTEM_PROMPT = "You are a careful assistant. Use the calculator for every arithmetic step, then answer."

_SPLIT_SEED_OFFSET = {"train": 0, "eval": 1_000_003}
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass(frozen=True)
class TinyTaskSample:
    """One question with its ground truth."""

    question: str
    tools: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    """Ground-truth calls, in order: {"name": ..., "arguments": {...}}."""
    results: list[str]
    """What each call returns."""
    answer: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The prompt: system and user turns."""


def _operand(rng: random.Random) -> int:
    return rng.randint(2, 60)


def _sample(rng: random.Random) -> TinyTaskSample:
    num_steps = rng.choice((1, 1, 2, 3))
    value = _operand(rng)
    question_expr = str(value)
    calls, results = [], []
    for step in range(num_steps):
        op = rng.choice("+-*")
        other = _operand(rng) if op != "*" else rng.randint(2, 9)
        expression = f"{value} {op} {other}"
        value = _APPLY[op](value, other)
        question_expr = f"({question_expr}) {op} {other}" if step else f"{question_expr} {op} {other}"
        calls.append({"name": "calculator", "arguments": {"expression": expression}})
        results.append(str(value))
    question = f"What is {question_expr}?"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return TinyTaskSample(
        question=question, tools=[CALCULATOR_TOOL], calls=calls, results=results, answer=str(value), messages=messages
    )


def make_tiny_task(seed: int, num_samples: int, split: str = "train") -> list[TinyTaskSample]:
    """`num_samples` questions of `split` ("train" or "eval"), deterministic in `seed`."""
    if split not in _SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SEED_OFFSET)}, got {split!r}")
    rng = random.Random(seed + _SPLIT_SEED_OFFSET[split])
    return [_sample(rng) for _ in range(num_samples)]


def demonstration(sample: TinyTaskSample) -> list[dict[str, Any]]:
    """The gold trajectory as chat messages: one call per assistant turn, then the answer."""
    messages = list(sample.messages)
    for call, result in zip(sample.calls, sample.results, strict=True):
        messages.append({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]})
        messages.append({"role": "tool", "content": result})
    messages.append({"role": "assistant", "content": f"The answer is {sample.answer}."})
    return messages
