"""`/update_weights_from_disk` switches the engine to the new weights (and back), through the router too."""

from __future__ import annotations

import httpx
import pytest
import torch
import transformers

from rest_megatron.assets import tiny_model_dir
from rest_megatron.data.tiny_task import make_tiny_task
from rest_megatron.rollout.clients import Router, SGLangClient
from rest_megatron.rollout.launch import start_embedded_servers
from rest_megatron.rollout.types import SamplingParams, WeightSyncError
from tests.rollout.conftest import run

GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


def _greedy_reference(model_dir, prompt: list[int]) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[
            0, len(prompt) :
        ].tolist()


def test_update_weights_from_disk_changes_outputs_to_the_new_weights(
    caller_dir, caller_tokenizer, tmp_path
) -> None:
    base_dir = tiny_model_dir("tiny-qwen3")
    sample = make_tiny_task(3, 1, "eval", kinds=("arithmetic",))[0]
    prompt = caller_tokenizer.encode(
        caller_tokenizer.apply_chat_template(
            sample.messages, tools=sample.tools, tokenize=False, add_generation_prompt=True
        ),
        add_special_tokens=False,
    )
    base_ref, caller_ref = _greedy_reference(base_dir, prompt), _greedy_reference(caller_dir, prompt)
    assert base_ref != caller_ref
    server = start_embedded_servers(base_dir, 1, log_dir=tmp_path, timeout_s=180)[0]

    async def scenario() -> dict:
        client = SGLangClient(server.base_url, timeout_s=60)
        router = Router([client])
        seen = {"base": (await router.generate(prompt, GREEDY)).output_ids}
        # The same prompt again after the update: a stale prefix cache would leak the old weights.
        await router.update_weights_from_disk(str(caller_dir), weight_version="step-1")
        generation = await router.generate(prompt, GREEDY)
        seen["caller"], seen["version"] = generation.output_ids, generation.extra["weight_version"]
        with pytest.raises(WeightSyncError, match="does-not-exist"):
            await router.update_weights_from_disk(str(tmp_path / "does-not-exist"))
        seen["after_failure"] = (await router.generate(prompt, GREEDY)).output_ids
        with pytest.raises(WeightSyncError, match="architecture"):
            await client.update_weights_from_disk(str(tiny_model_dir("tiny-llama")))
        await router.update_weights_from_disk(str(base_dir))
        seen["base_again"] = (await router.generate(prompt, GREEDY)).output_ids
        await router.flush_cache()
        await router.aclose()
        return seen

    try:
        seen = run(scenario())
        info = httpx.get(f"{server.base_url}/get_model_info", trust_env=False).json()
    finally:
        server.stop()
    assert seen["base"] == base_ref
    assert seen["caller"] == caller_ref and seen["version"] == "step-1"
    assert seen["after_failure"] == caller_ref  # a failed load keeps the old weights serving
    assert seen["base_again"] == base_ref
    assert info["model_path"] == str(base_dir)
