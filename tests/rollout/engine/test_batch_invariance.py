"""Batch invariance of the embedded engine: a request's sampled tokens and logprobs depend on the
request and its seed only, not on the other requests in flight or the order they arrived in.

Real engine cores (the fine-tuned tiny tool caller, in process), temperature 1, seeded per request.
The prompts share the system prompt and tool schemas, so the prefix cache is exercised too.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
import torch

from rest_megatron.rollout.engine.core import EngineCore, EngineRequest
from rest_megatron.rollout.engine.sampling import RowSampling
from tests.rollout.engine.test_app import _prompts

MAX_NEW_TOKENS = 48


def _request(prompt: list[int], seed: int) -> EngineRequest:
    sampling = RowSampling(
        temperature=1.0,
        top_p=1.0,
        top_k=-1,
        original_logprobs=False,
        generator=torch.Generator().manual_seed(seed),
    )
    return EngineRequest(input_ids=prompt, sampling=sampling, max_new_tokens=MAX_NEW_TOKENS)


def _serve(
    model_dir: Path, prompts: list[list[int]], seeds: list[int], cache_tokens: int
) -> list[EngineRequest]:
    """Submit all requests at once to a fresh engine (they share decode steps) and wait for them."""
    core = EngineCore(model_dir, max_running=len(prompts), prefix_cache_tokens=cache_tokens)
    requests = [_request(p, s) for p, s in zip(prompts, seeds)]
    futures = [core.submit(r) for r in requests]  # queued before the worker starts: admitted together
    core.start()
    try:
        concurrent.futures.wait(futures, timeout=300)
        return [f.result(timeout=0) for f in futures]
    finally:
        core.stop()


@pytest.fixture(scope="module")
def prompts(caller_tokenizer) -> list[list[int]]:
    return _prompts(caller_tokenizer, 8)


@pytest.mark.parametrize("cache_tokens", [0, 32768], ids=["no-prefix-cache", "prefix-cache"])
def test_a_request_samples_the_same_tokens_alone_and_among_others_in_any_order(
    caller_dir, prompts, cache_tokens
) -> None:
    target, others = prompts[0], prompts[1:]
    alone = _serve(caller_dir, [target], [1234], cache_tokens)[0]
    assert len(alone.output_ids) > 8, "the target finished too early to show anything"
    orders = [[target, *others], [*others, target], [*others[:3], target, *others[3:]]]
    positions = [0, 7, 3]
    for order, position in zip(orders, positions):
        seeds = [1234 if i == position else 100 + i for i in range(len(order))]
        served = _serve(caller_dir, order, seeds, cache_tokens)
        assert max(len(r.output_ids) for r in served) > 1, "no shared decode steps"
        mine = served[position]
        assert mine.output_ids == alone.output_ids, f"target at position {position}"
        if cache_tokens == 0 or mine.cached_tokens == 0:
            assert mine.logprobs == alone.logprobs, f"target at position {position}"  # bitwise: same shapes
        else:
            # A prefix cached by another request (the shared system prompt) was computed in a forward
            # of another length: float32 rounding of the prompt's KV differs, not the decode path.
            torch.testing.assert_close(
                torch.tensor(mine.logprobs), torch.tensor(alone.logprobs), atol=1e-5, rtol=0
            )


def test_the_same_request_twice_on_one_engine_repeats_itself(caller_dir, prompts) -> None:
    """The second run hits the prefix cache (the first one's KV); the tokens must not change."""
    core = EngineCore(caller_dir, max_running=8)
    core.start()
    try:
        first = core.submit(_request(prompts[0], 99)).result(timeout=300)
        core.submit(_request(prompts[1], 5)).result(timeout=300)
        second = core.submit(_request(prompts[0], 99)).result(timeout=300)
    finally:
        core.stop()
    assert second.cached_tokens > 0
    assert second.output_ids == first.output_ids
    torch.testing.assert_close(torch.tensor(second.logprobs), torch.tensor(first.logprobs), atol=1e-5, rtol=0)
