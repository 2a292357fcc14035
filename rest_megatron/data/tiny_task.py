"""The tiny tool-use task: questions that need 1–3 real tool calls, generated from a seed.

Two kinds of question, both answered through the sandbox's tools:
- `arithmetic`: "What is (7 + 5) * 3?", one calculator call per operation (1–3);
- `price`: "What do 3 units of apple cost?", a key-value lookup (`lookup_price`, the sandbox's shop
  catalogue) for each item, then one calculator call for the total (2 or 3 calls). The prices are only
  in the tool, so the model must call it.
Price questions offer both tools, so the model also has to pick the right one.

Each sample has the chat messages of the prompt, the tool schemas the model may call, the ground-truth
calls in order, and the final answer. `demonstration` renders the gold trajectory (calls, tool
results, answer) as chat messages for the SFT warm start. Every question text belongs to one split
(a hash of the text picks it, 1 in 8 to eval), so no held-out question is ever a training question,
whatever the seeds; the splits also draw from different seeds.
"""

from __future__ import annotations

import operator
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from tools_sandbox.tools import catalogue

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

LOOKUP_TOOL: dict[str, Any] = {"type": "function", "function": catalogue.SCHEMA}

SYSTEM_PROMPT = "You are a careful assistant. Use the calculator for every arithmetic step, then answer."

KINDS = ("arithmetic", "price")
"""Question kinds; `make_tiny_task` draws arithmetic and price questions half and half by default."""

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
    return rng.randint(2, 9)


def _price_sample(rng: random.Random) -> TinyTaskSample:
    items = rng.sample(sorted(catalogue.PRICES), rng.choice((1, 1, 2)))
    counts = [rng.randint(2, 9) for _ in items]
    prices = [catalogue.PRICES[item] for item in items]
    calls = [{"name": "lookup_price", "arguments": {"item": item}} for item in items]
    expression = " + ".join(f"{price} * {count}" for price, count in zip(prices, counts))
    calls.append({"name": "calculator", "arguments": {"expression": expression}})
    total = sum(price * count for price, count in zip(prices, counts))
    results = [str(price) for price in prices] + [str(total)]
    question = "What do " + " and ".join(f"{c} units of {i}" for c, i in zip(counts, items)) + " cost?"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return TinyTaskSample(
        question=question,
        tools=[LOOKUP_TOOL, CALCULATOR_TOOL],
        calls=calls,
        results=results,
        answer=str(total),
        messages=messages,
    )


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
        question=question,
        tools=[CALCULATOR_TOOL],
        calls=calls,
        results=results,
        answer=str(value),
        messages=messages,
    )


def make_tiny_task(
    seed: int, num_samples: int, split: str = "train", kinds: tuple[str, ...] = KINDS
) -> list[TinyTaskSample]:
    """`num_samples` questions of `split` ("train" or "eval") drawn from `kinds`, deterministic in `seed`."""
    if split not in _SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SEED_OFFSET)}, got {split!r}")
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    make = {"arithmetic": _sample, "price": _price_sample}
    rng = random.Random(seed + _SPLIT_SEED_OFFSET[split])
    samples: list[TinyTaskSample] = []
    while len(samples) < num_samples:
        sample = make[rng.choice(kinds)](rng)
        if split_of(sample.question) == split:
            samples.append(sample)
    return samples


def split_of(question: str) -> str:
    """The split that owns a question text: "eval" for 1 in 8 (by CRC-32), else "train"."""
    return "eval" if zlib.crc32(question.encode()) % 8 == 0 else "train"


def demonstration(sample: TinyTaskSample) -> list[dict[str, Any]]:
    """The gold trajectory as chat messages: one call per assistant turn, then the answer."""
    messages = list(sample.messages)
    for call, result in zip(sample.calls, sample.results, strict=True):
        messages.append(
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}
        )
        messages.append({"role": "tool", "content": result})
    messages.append({"role": "assistant", "content": f"The answer is {sample.answer}."})
    return messages
