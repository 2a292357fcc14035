"""KL to a frozen reference policy on real gloo ranks: `build_reference` + the KL term, like `loop.rl_step`.

Actor and reference both load the tiny model's HF folder. Before any update the reference's log-probs
are the actor's (KL exactly 0 at the first update); the second update of a step sees the first one's
weights, so its KL is positive. Reference log-probs and each update's KL, loss and gradient norm are
the same at TP1, TP2 and PP2 (the reference shares the actor's layout and process groups).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from rest_megatron.assets import tiny_hf_config, tiny_model_dir
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import model_spec_from_hf
from rest_megatron.trainer import stages
from rest_megatron.trainer.actor import build_actor, build_reference
from tests.distributed.test_ppo_updates import STEP, _samples

OBJECTIVE = AlgorithmConfig(clip_low=0.2, clip_high=0.2, dual_clip=3.0, kl_coef=0.5, kl_estimator="k3")


def _kl_step(tp: int, pp: int, hf_dir: str, seed: int) -> dict:
    from rest_megatron.convert.from_hf import load_hf_into_model
    from rest_megatron.convert.hf_files import HFWeights

    init_model_parallel(ParallelLayout(tp=tp, pp=pp), seed=1234, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    layout = dict(tp=tp, pp=pp, chunk_size=7, temperature=0.8)
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-3, clip_grad=1.0, adam_eps=1e-5), **layout)
    load_hf_into_model(actor.network, spec, HFWeights.open(hf_dir, spec=spec))
    reference = build_reference(spec, hf_dir, **layout)
    assert not any(p.requires_grad for p in reference.network.parameters())
    plan = stages.plan_updates(
        _samples(seed, spec.vocab_size),
        num_updates=2,
        seed=seed,
        dp_size=1,
        micro_batch_size=2,
        length_multiple=8 * tp,
        packed=False,
    )
    updates = [stages.share_microbatches(s, micro_batch_size=2, pad_id=0) for s in plan[0]]
    everything = [mb for update in updates for mb in update]
    stats = actor.token_stats(everything)
    stages.attach_weights(everything, stats, weights="paper", params={}, step=STEP)
    stages.attach_reference(everything, reference.token_stats(everything))
    gap = max(
        float(((mb["ref_logprobs"] - st.logprob) * mb["loss_mask"]).abs().max())
        for mb, st in zip(everything, stats)
    )
    # Only the loss tokens: the padded width depends on the layout (length_multiple is 8 × tp).
    ref_logprobs = torch.cat([mb["ref_logprobs"][mb["loss_mask"] > 0] for mb in everything])
    metrics = stages.ppo_updates(actor, updates, OBJECTIVE, epochs=1)
    per_update = [
        {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"ppo/u{u}/")} for u in (1, 2)
    ]
    return {
        "gap": gap,
        "ref_logprobs": ref_logprobs,
        "updates": per_update,
        "metrics": metrics,
        "rank": dist.get_rank(),
    }


def test_reference_kl_is_layout_invariant_and_moves_after_the_first_update(gloo) -> None:
    hf_dir = str(tiny_model_dir("tiny-qwen3"))
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    ref = gloo(1).run(_kl_step, 1, 1, hf_dir, seed)[0]
    assert ref["gap"] < 1e-5  # same weights: the reference is the actor before any update
    first, second = ref["updates"]
    assert first["ref_kl"] == pytest.approx(0.0, abs=1e-9)
    assert second["ref_kl"] > 1e-6, second
    assert ref["metrics"]["num_updates"] == 2

    for tp, pp in ((2, 1), (1, 2)):
        for result in gloo(tp * pp).run(_kl_step, tp, pp, hf_dir, seed):
            torch.testing.assert_close(
                result["ref_logprobs"], ref["ref_logprobs"], rtol=0, atol=2e-5, msg=f"seed {seed}"
            )
            for ours, theirs in zip(result["updates"], ref["updates"]):
                assert ours["ref_kl"] == pytest.approx(theirs["ref_kl"], rel=1e-3, abs=1e-8), (tp, pp, seed)
            for key in ("loss", "grad_norm", "ref_kl"):
                assert result["metrics"][key] == pytest.approx(ref["metrics"][key], rel=1e-4, abs=1e-8), (
                    tp,
                    pp,
                    key,
                    seed,
                )
