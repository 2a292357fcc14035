"""bf16 trains the loaded model: Megatron's fp32 main params follow the Hugging Face weights.

In bf16 the Megatron optimizer keeps fp32 main copies of the parameters and writes them back at every
step. Copies taken before the HF load (or before a resume that restores only the model) would turn
the policy back into the random initialisation at the first update. A zero-gradient Adam step moves
nothing, so after it the model must still hold the HF weights, with and without the distributed
optimizer (DP=2 shards its main params).
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from rest_megatron.assets import tiny_model_dir
from rest_megatron.config import OptimizerConfig
from rest_megatron.convert.live import iter_hf_tensors
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import load_hf_config, model_spec_from_hf
from rest_megatron.trainer.actor import build_actor
from rest_megatron.trainer.checkpoint import load_checkpoint, save_checkpoint
from rest_megatron.trainer.runtime import load_hf_weights

BF16_RTOL = 2.0**-8  # twice bf16's relative rounding error: the HF float32 values rounded once


def _zero_gradient_step(actor) -> None:
    actor.model.zero_grad_buffer()
    actor.optimizer.zero_grad()
    actor.optimizer.step()


def _worst_relative_gap(actor, spec, hf_dir) -> float:
    """Largest |exported - HF| / max|HF| over all tensors (on rank 0; -1 elsewhere)."""
    exported = dict(iter_hf_tensors(actor.network, spec))
    if not exported:
        return -1.0
    worst = 0.0
    with safe_open(str(hf_dir / "model.safetensors"), "pt") as handle:
        for name, value in exported.items():
            reference = handle.get_tensor(name).double()
            gap = (value.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-30)
            worst = max(worst, float(gap))
    return worst


def _load_step_resume_step(root: str, distributed_optimizer: bool) -> tuple[float, float]:
    init_model_parallel(ParallelLayout(tp=1, pp=1), seed=1234, timeout_s=120)
    hf_dir = tiny_model_dir("tiny-qwen3")
    spec = model_spec_from_hf(load_hf_config(hf_dir))
    settings = OptimizerConfig(num_steps=1, lr=1e-2)
    actor = build_actor(
        spec, settings, use_distributed_optimizer=distributed_optimizer, dtype=torch.bfloat16, chunk_size=16
    )
    load_hf_weights(actor, spec, hf_dir)
    save_checkpoint(
        root, 0, actor.model, actor.optimizer, actor.scheduler
    )  # before any step: no optimizer state
    _zero_gradient_step(actor)
    after_load = _worst_relative_gap(actor, spec, hf_dir)

    resumed = build_actor(
        spec, settings, use_distributed_optimizer=distributed_optimizer, dtype=torch.bfloat16, chunk_size=16
    )  # a new random init
    state = load_checkpoint(root, resumed.model, resumed.optimizer, resumed.scheduler)
    assert not state["optimizer_saved"]
    _zero_gradient_step(resumed)
    return after_load, _worst_relative_gap(resumed, spec, hf_dir)


@pytest.mark.parametrize("distributed_optimizer", [False, True], ids=["optimizer", "distributed-optimizer"])
def test_bf16_zero_gradient_step_keeps_the_hf_weights(gloo, tmp_path, distributed_optimizer: bool) -> None:
    after_load, after_resume = gloo(2).run(
        _load_step_resume_step, str(tmp_path / "ckpt"), distributed_optimizer
    )[0]
    assert after_load < BF16_RTOL, (
        f"after the HF load the update moved the weights by {after_load:.3g} (random init?)"
    )
    assert after_resume < BF16_RTOL, f"after the resume the update moved the weights by {after_resume:.3g}"
