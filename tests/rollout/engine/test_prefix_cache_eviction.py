"""Sampling logprobs stay exact while the prefix cache evicts under concurrent multi-turn traffic.

A regression guard for the drift seen in training after a greedy evaluation (sampling logprobs off
by ~1 nat from the trainer's). A real engine process with a prefix cache far smaller than the
traffic serves many concurrent greedy multi-turn trajectories (evictions, partial hits on the
shared system prompt, padded decode batches of mixed prefix-hit lengths), then temperature-1 groups
of identical prompts that continue on whatever the greedy phase left in the cache. Every returned
logprob must equal a fresh transformers forward of the same tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import torch

from rest_megatron.data.tiny_task import make_tiny_task
from rest_megatron.rollout.clients import SGLangClient
from rest_megatron.rollout.launch import ServerProcess, start_embedded_servers
from rest_megatron.rollout.types import SamplingParams
from rest_megatron.testing.tiny_caller import prompt_messages
from tests.rollout.conftest import run

CACHE_TOKENS = 900
"""About three prompts' worth: the greedy phase evicts constantly."""
TOOL_TURN = "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def small_cache_engine(caller_dir, tmp_path) -> Iterator[ServerProcess]:
    servers = start_embedded_servers(
        caller_dir,
        1,
        log_dir=tmp_path,
        timeout_s=180,
        extra={"seed": 3, "num_threads": 1, "prefix_cache_tokens": CACHE_TOKENS},
    )
    yield servers[0]
    servers[0].stop()


def _prompts(tokenizer, seed: int, n: int, split: str) -> list[list[int]]:
    out = []
    for sample in make_tiny_task(seed, n, split, kinds=("arithmetic",)):
        messages, tools = prompt_messages(sample)
        text = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


async def _trajectory(
    client, prompt: list[int], tool_ids: list[int], temperature: float, turns: int, max_new: int
):
    """(prompt ids, generation) of every turn; a canned tool response is appended between turns."""
    ids, out = list(prompt), []
    for _ in range(turns):
        generation = await client.generate(
            ids, SamplingParams(temperature=temperature, max_new_tokens=max_new)
        )
        out.append((ids, generation))
        ids = ids + list(generation.output_ids) + tool_ids
    return out


def _max_error(model, prompt: list[int], generation) -> float:
    output = list(generation.output_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + output])).logits[0].float()  # [T, V]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(output) - 1)
    expected = torch.log_softmax(logits[positions], -1).gather(-1, torch.tensor(output)[:, None])[:, 0]
    return (expected - torch.tensor(generation.logprobs)).abs().max().item()


def test_logprobs_exact_under_eviction_after_greedy_multi_turn(
    small_cache_engine, caller_model, caller_tokenizer
) -> None:
    tool_ids = caller_tokenizer.encode(TOOL_TURN, add_special_tokens=False)
    evaluation = _prompts(caller_tokenizer, 0, 12, "eval")
    training = _prompts(caller_tokenizer, 0, 3, "train") + evaluation[:1]

    async def phases():
        client = SGLangClient(small_cache_engine.base_url, timeout_s=300)
        try:
            greedy = await asyncio.gather(*(_trajectory(client, p, tool_ids, 0.0, 3, 32) for p in evaluation))
            sampled = await asyncio.gather(
                *(_trajectory(client, p, tool_ids, 1.0, 2, 32) for p in training for _ in range(3))
            )
            return greedy, sampled
        finally:
            await client.aclose()

    greedy, sampled = run(phases())
    info = httpx.get(f"{small_cache_engine.base_url}/get_server_info", trust_env=False).json()
    assert info["prefix_cache_tokens"] <= CACHE_TOKENS and info["prefix_cache_hit_tokens"] > 0
    total = sum(len(p) + len(g.output_ids) for t in greedy for p, g in t)
    assert total > 10 * CACHE_TOKENS, "the traffic must force evictions"
    errors = {
        phase: [_max_error(caller_model, p, g) for t in trajs for p, g in t]
        for phase, trajs in (("greedy", greedy), ("sampled", sampled))
    }
    for phase, errs in errors.items():
        assert max(errs) < 1e-4, (
            f"{phase}: {sum(e >= 1e-4 for e in errs)}/{len(errs)} turns drifted, max {max(errs):.3g}"
        )
