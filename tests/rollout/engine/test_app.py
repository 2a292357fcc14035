"""The embedded engine as a real server process: exactness against transformers, SGLang semantics."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import torch

from rest_megatron.data.tiny_task import make_tiny_task
from rest_megatron.rollout.clients import SGLangClient, VLLMClient
from rest_megatron.rollout.types import BadServerReply, SamplingParams, ServerUnavailable
from rest_megatron.testing.tiny_caller import prompt_messages
from tests.rollout.conftest import run


def _prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i, sample in enumerate(make_tiny_task(7, n, "eval", kinds=("arithmetic",))):
        messages, tools = prompt_messages(sample, ("normal", "slow", "broken")[i % 3])
        text = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


def _hf_logprobs(model, prompt: list[int], output: list[int]) -> torch.Tensor:
    """log softmax of the model's logits at each output position (one full forward)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + output])).logits[0].float()  # [T, V]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(output) - 1)
    return torch.log_softmax(logits[positions], -1).gather(-1, torch.tensor(output)[:, None])[:, 0]


async def _generate_all(url: str, prompts: list[list[int]], params: list[SamplingParams]):
    client = SGLangClient(url, timeout_s=120)
    try:
        return await asyncio.gather(*(client.generate(p, s) for p, s in zip(prompts, params)))
    finally:
        await client.aclose()


def test_greedy_output_equals_transformers_generate(engine, caller_model, caller_tokenizer) -> None:
    prompts = _prompts(caller_tokenizer, 6)
    before = httpx.get(f"{engine.base_url}/get_server_info", trust_env=False).json()
    # Concurrent requests of different lengths are served in the same decode steps (one forward each).
    gens = run(
        _generate_all(engine.base_url, prompts, [SamplingParams(temperature=0, max_new_tokens=48)] * 6)
    )
    after = httpx.get(f"{engine.base_url}/get_server_info", trust_env=False).json()
    rows = after["num_decode_rows"] - before["num_decode_rows"]
    steps = after["num_decode_steps"] - before["num_decode_steps"]
    assert rows > steps, "concurrent requests were not batched into shared decode steps"
    for prompt, gen in zip(prompts, gens):
        with torch.no_grad():
            expected = caller_model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False)[
                0, len(prompt) :
            ]
        assert gen.output_ids == expected.tolist()
        assert gen.finish_reason == "stop" and gen.matched_stop == gen.output_ids[-1]
        assert torch.allclose(
            torch.tensor(gen.logprobs), _hf_logprobs(caller_model, prompt, gen.output_ids), atol=1e-4
        )


def test_sampling_logprobs_at_temperature_one_are_the_models_log_softmax(
    engine, caller_model, caller_tokenizer
) -> None:
    prompts = _prompts(caller_tokenizer, 4)
    params = [SamplingParams(temperature=1.0, max_new_tokens=40, seed=100 + i) for i in range(4)]
    gens = run(_generate_all(engine.base_url, prompts, params))
    again = run(_generate_all(engine.base_url, prompts, params))
    assert [g.output_ids for g in gens] == [g.output_ids for g in again]  # seeded: reproducible
    worst = 0.0
    for prompt, gen in zip(prompts, gens):
        reference = _hf_logprobs(caller_model, prompt, gen.output_ids)
        worst = max(worst, float((torch.tensor(gen.logprobs) - reference).abs().max()))
    assert worst < 1e-4, worst


def test_finish_reasons_and_stop_tokens(engine, caller_tokenizer) -> None:
    prompt = _prompts(caller_tokenizer, 1)[0]
    greedy = run(
        _generate_all(engine.base_url, [prompt], [SamplingParams(temperature=0, max_new_tokens=48)])
    )[0]
    first, second = greedy.output_ids[:2]
    cut, stopped = run(
        _generate_all(
            engine.base_url,
            [prompt, prompt],
            [
                SamplingParams(temperature=0, max_new_tokens=3),
                SamplingParams(temperature=0, max_new_tokens=48, stop_token_ids=(second,)),
            ],
        )
    )
    assert (cut.output_ids, cut.finish_reason, cut.matched_stop) == (greedy.output_ids[:3], "length", None)
    assert (stopped.output_ids, stopped.finish_reason, stopped.matched_stop) == (
        [first, second],
        "stop",
        second,
    )


def test_raw_sglang_reply_schema(engine, caller_tokenizer) -> None:
    prompts = _prompts(caller_tokenizer, 2)
    reply = httpx.post(
        f"{engine.base_url}/generate",
        trust_env=False,
        timeout=60,
        json={
            "input_ids": prompts,
            "sampling_params": {"temperature": 0, "max_new_tokens": 5},
            "return_logprob": True,
            "return_text_in_logprobs": True,
        },
    ).json()
    assert isinstance(reply, list) and len(reply) == 2
    meta = reply[0]["meta_info"]
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert [t[1] for t in meta["output_token_logprobs"]] == reply[0]["output_ids"]
    assert "".join(t[2] for t in meta["output_token_logprobs"]) == caller_tokenizer.decode(
        reply[0]["output_ids"]
    )
    assert meta["prompt_tokens"] == len(prompts[0]) and meta["completion_tokens"] == 5


@pytest.mark.parametrize(
    "body, message",
    [
        ({"sampling_params": {"frequency_penalty": 0.5}}, "frequency_penalty"),
        ({"sampling_params": {"min_p": 0.1}}, "min_p"),
        ({"sampling_params": {"best_of": 2}}, "unsupported sampling params"),
        ({"sampling_params": {"top_k": 0}}, "top_k"),
        ({"input_ids": [1, 99999]}, "token ids in"),
        ({"input_ids": [1] * 5000}, "context"),
        ({"input_ids": None, "text": "hi"}, "send input_ids"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(engine, body, message) -> None:
    payload = {"input_ids": [1, 2, 3], "sampling_params": {}, **body}
    response = httpx.post(f"{engine.base_url}/generate", json=payload, trust_env=False, timeout=30)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_client_raises_bad_server_reply_without_retrying(engine) -> None:
    client = SGLangClient(engine.base_url, max_retries=5)

    async def go() -> None:
        try:
            await client.generate([1, 99999], SamplingParams())
        finally:
            await client.aclose()

    started = time.perf_counter()
    with pytest.raises(BadServerReply, match="token ids in"):
        run(go())
    assert time.perf_counter() - started < 5


def test_a_request_whose_client_gives_up_is_aborted(engine, caller_tokenizer) -> None:
    prompt = _prompts(caller_tokenizer, 1)[0]
    client = SGLangClient(engine.base_url, timeout_s=0.5, max_retries=0)

    async def go() -> None:
        try:
            await client.generate(prompt, SamplingParams(max_new_tokens=3000, ignore_eos=True))
        finally:
            await client.aclose()

    with pytest.raises(ServerUnavailable, match="no answer within 0.5 s"):
        run(go())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(f"{engine.base_url}/get_server_info", trust_env=False).json()["num_running"] == 0:
            return
        time.sleep(0.1)
    pytest.fail("the abandoned request kept running on the engine")


def test_vllm_client_on_the_completions_endpoint(engine, caller_model, caller_tokenizer) -> None:
    prompts = _prompts(caller_tokenizer, 2)

    async def go():
        client = VLLMClient(engine.base_url)
        try:
            return [
                await client.generate(p, SamplingParams(temperature=0.5, max_new_tokens=30, seed=5))
                for p in prompts
            ]
        finally:
            await client.aclose()

    for prompt, gen in zip(prompts, run(go())):
        # vLLM reports raw logprobs (before temperature), whatever the temperature.
        assert torch.allclose(
            torch.tensor(gen.logprobs), _hf_logprobs(caller_model, prompt, gen.output_ids), atol=1e-4
        )
        assert gen.finish_reason in ("stop", "length") and gen.output_ids
