"""Train/inference consistency: the embedded engine's sampling logprobs at temperature 1 equal the
Megatron actor's forward-only log π of the same tokens (the ratio the PPO loss starts from is 1).

The engine (a real server process, Hugging Face transformers) samples trajectories; the actor is
built at TP=2 on gloo ranks and loaded from the same Hugging Face folder with `rest_megatron.convert`.
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
import torch

from rest_megatron.assets import tiny_model_dir
from rest_megatron.rollout.clients import SGLangClient
from rest_megatron.rollout.launch import start_embedded_servers
from rest_megatron.rollout.types import SamplingParams

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rest_megatron.convert.from_hf") is None, reason="needs rest_megatron.convert"
)

TOLERANCE = 1e-4


def _actor_logprobs(model_dir: str, batch: dict[str, torch.Tensor], tp: int) -> torch.Tensor:
    """(runs on every gloo rank) log π(labels | tokens) from the Megatron actor loaded from `model_dir`."""
    from rest_megatron.config import OptimizerConfig
    from rest_megatron.convert.from_hf import load_hf_into_model
    from rest_megatron.convert.hf_files import HFWeights
    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.model.builder import load_hf_config, model_spec_from_hf
    from rest_megatron.trainer.actor import build_actor

    init_model_parallel(ParallelLayout(tp=tp, pp=1), seed=0)
    spec = model_spec_from_hf(load_hf_config(model_dir))
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=0.0), tp=tp, pp=1, chunk_size=16)
    load_hf_into_model(actor.network, spec, HFWeights.open(model_dir, spec=spec))
    return actor.token_stats([batch])[0].logprob


def _sample(url: str, prompts: list[list[int]]) -> list:
    async def go() -> list:
        client = SGLangClient(url, timeout_s=120)
        try:
            return await asyncio.gather(
                *(
                    client.generate(
                        p, SamplingParams(temperature=1.0, max_new_tokens=40, seed=i, ignore_eos=True)
                    )
                    for i, p in enumerate(prompts)
                )
            )
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_engine_logprobs_at_temperature_one_equal_the_megatron_actor(gloo, tmp_path) -> None:
    model_dir = tiny_model_dir("tiny-qwen3")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 1500, (n,), generator=gen).tolist() for n in (5, 17, 30)]
    server = start_embedded_servers(model_dir, 1, log_dir=tmp_path, timeout_s=180)[0]
    try:
        generations = _sample(server.base_url, prompts)
    finally:
        server.stop()
    sequences = [p + g.output_ids for p, g in zip(prompts, generations)]
    length = max(len(s) for s in sequences) - 1
    tokens = torch.zeros(len(sequences), length + 1, dtype=torch.long)
    loss_mask = torch.zeros(len(sequences), length)
    engine = torch.zeros(len(sequences), length)
    for row, (prompt, generation, seq) in enumerate(zip(prompts, generations, sequences)):
        tokens[row, : len(seq)] = torch.tensor(seq)
        start = len(prompt) - 1  # label position of the first sampled token
        loss_mask[row, start : start + len(generation.output_ids)] = 1
        engine[row, start : start + len(generation.output_ids)] = torch.tensor(generation.logprobs)
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": loss_mask}
    ranks = gloo(2).run(_actor_logprobs, str(model_dir), batch, 2)
    actor = ranks[0]
    assert torch.equal(actor, ranks[1])
    difference = float(((actor - engine) * loss_mask).abs().max())
    assert difference < TOLERANCE, difference
    assert (
        float(loss_mask.sum()) == 120 and float((engine * loss_mask).abs().sum()) > 10
    )  # real, non-trivial tokens
