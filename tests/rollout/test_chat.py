"""Tool turns are rendered as chat-template suffixes and appended as new IDs; nothing is re-tokenized."""

from __future__ import annotations

import pytest
import transformers

from rest_megatron.assets import tiny_model_dir
from rest_megatron.data.tiny_task import make_tiny_task
from rest_megatron.rollout.chat import ChatRenderer


@pytest.fixture(scope="module")
def renderer() -> ChatRenderer:
    return ChatRenderer(transformers.AutoTokenizer.from_pretrained(tiny_model_dir("tiny-qwen3")))


CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "50 - 4"}}\n</tool_call>'


def test_trajectory_text_equals_the_template_render_of_the_conversation(renderer: ChatRenderer) -> None:
    sample = make_tiny_task(0, 1)[0]
    tok = renderer.tokenizer
    ids = renderer.prompt_ids(sample.messages, sample.tools)
    history = list(sample.messages)
    for turn, (content, results) in enumerate([(CALL, ["46"]), (CALL + "\n" + CALL, ["12", "oops"])]):
        sampled = renderer.encode(content) + [renderer.end_of_turn_id]  # what a server would return
        ids += sampled
        history.append({"role": "assistant", "content": renderer.assistant_text(sampled)})
        assert history[-1]["content"] == content
        tool_messages = [{"role": "tool", "content": r} for r in results]
        suffix = renderer.tool_turn_ids(history, tool_messages, sample.tools, ended_with_end_of_turn=True)
        ids += suffix
        history += tool_messages
        expected = renderer.render(history, sample.tools, add_generation_prompt=True)
        assert tok.decode(ids, skip_special_tokens=False) == expected, f"turn {turn}"
    assert tok.decode(suffix).count("<tool_response>") == 2  # consecutive tool messages share one user turn


def test_suffix_starts_with_the_rest_of_the_closing(renderer: ChatRenderer) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": CALL}]
    tool = [{"role": "tool", "content": "46"}]
    decode = renderer.tokenizer.decode
    after_eos = decode(renderer.tool_turn_ids(history, tool, None, ended_with_end_of_turn=True))
    assert (
        after_eos
        == "\n<|im_start|>user\n<tool_response>\n46\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    # A turn stopped by another stop token never closed itself: the whole closing is appended (mask 0).
    other_stop = decode(renderer.tool_turn_ids(history, tool, None, ended_with_end_of_turn=False))
    assert other_stop == "<|im_end|>" + after_eos


def test_unknown_end_of_turn_token_is_refused() -> None:
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("tiny-qwen3"))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ChatRenderer(tok, end_of_turn_token="<|eot_id|>")
