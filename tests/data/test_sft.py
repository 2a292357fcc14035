"""SFT rendering: the loss mask covers exactly the assistant turns, and tool calls must be rendered."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rest_megatron.assets import tiny_model_dir
from rest_megatron.data.sft import tokenize_for_sft

CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "2+3"}}}
MESSAGES = [
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "5"},
    {"role": "assistant", "content": "The answer is 5."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_model_dir("tiny-qwen3"))


def test_the_mask_covers_the_assistant_turns_only(tokenizer) -> None:
    ids, mask = tokenize_for_sft(tokenizer, MESSAGES)
    trained = tokenizer.decode(ids[mask.bool()])
    assert "calculator" in trained and "The answer is 5." in trained
    assert "What is 2+3?" not in trained and "assistant" not in trained


def test_a_template_that_drops_tool_calls_stops_sft_with_the_reason(tokenizer) -> None:
    dropping = tokenizer.chat_template.replace("message.tool_calls", "message.no_such_field")
    assert dropping != tokenizer.chat_template  # the tiny template renders tool_calls from that field
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("tiny-qwen3"), chat_template=dropping)
    with pytest.raises(ValueError, match=r"renders assistant message 1 without its tool call 'calculator'"):
        tokenize_for_sft(tokenizer, MESSAGES)
