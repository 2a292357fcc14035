"""A tiny Qwen3-like Megatron GPTModel gives the same loss and grad norm at every TP/PP layout.

The weights are made once at TP1×PP1, saved as a Megatron distributed checkpoint and loaded at
TP=2, PP=2 and TP2×PP2, so every layout computes with the same global weights (and the test
exercises resharding through dist_checkpointing on gloo as a side effect).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import build_gpt_model, model_spec_from_hf, transformer_config

TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 4,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 1000,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}
NUM_MICROBATCHES, MICRO_BATCH, SEQ = 2, 2, 24


def _batches(seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(NUM_MICROBATCHES):
        tokens = torch.randint(0, TINY_QWEN3["vocab_size"], (MICRO_BATCH, SEQ + 1), generator=gen)
        mask = (torch.rand(MICRO_BATCH, SEQ, generator=gen) > 0.2).float()
        out.append({"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": mask})
    return out


def _grad_norm(model: torch.nn.Module) -> float:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

    total = torch.zeros(1, dtype=torch.float64)
    for param in model.parameters():
        if param.grad is not None and param_is_not_tensor_parallel_duplicate(param):
            total += param.grad.double().pow(2).sum()
    dist.all_reduce(total, group=parallel_state.get_model_parallel_group())
    return total.sqrt().item()


def _loss_and_grad_norm(tp: int, pp: int, ckpt_dir: str, data_seed: int, save: bool) -> dict:
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    init_model_parallel(ParallelLayout(tp=tp, pp=pp), seed=1234, timeout_s=120)
    spec = model_spec_from_hf(TINY_QWEN3)
    model = build_gpt_model(spec, transformer_config(spec, tp=tp, pp=pp), max_sequence_length=SEQ)
    if save:
        if dist.get_rank() == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
        dist.barrier()
        dist_checkpointing.save(model.sharded_state_dict(), ckpt_dir)
    else:
        model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), ckpt_dir))

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        positions = torch.arange(SEQ).expand(MICRO_BATCH, SEQ)
        per_token = model(batch["tokens"], positions, None, labels=batch["labels"])

        def loss_func(output):
            loss = (output.float() * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
            return loss, {"loss": loss.detach().clone()}  # the schedule divides `loss` in place

        return per_token, loss_func

    losses = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(_batches(data_seed)),
        model=[model],
        num_microbatches=NUM_MICROBATCHES,
        seq_length=SEQ,
        micro_batch_size=MICRO_BATCH,
        forward_only=False,
    )
    is_last = parallel_state.is_pipeline_last_stage()
    loss = sum(float(d["loss"]) for d in losses) / NUM_MICROBATCHES if is_last else None
    return {"loss": loss, "grad_norm": _grad_norm(model), "rank": dist.get_rank()}


def test_loss_and_grad_norm_match_across_tp_pp_layouts(gloo, tmp_path) -> None:
    pool = gloo(4)
    data_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    ckpt = str(tmp_path / "tp1pp1")
    reference = pool.run(_loss_and_grad_norm, 1, 1, ckpt, data_seed, True)
    ref_loss, ref_norm = reference[0]["loss"], reference[0]["grad_norm"]
    assert all(r["loss"] == pytest.approx(ref_loss, abs=1e-12) for r in reference), "DP replicas disagree"
    assert 5.0 < ref_loss < 9.0  # ~log(1000) for random weights: the model really ran
    for tp, pp in [(2, 1), (1, 2), (2, 2)]:
        results = pool.run(_loss_and_grad_norm, tp, pp, ckpt, data_seed, False)
        losses = [r["loss"] for r in results if r["loss"] is not None]
        assert losses and all(abs(x - ref_loss) <= 1e-5 for x in losses), (tp, pp, losses, ref_loss)
        norms = [r["grad_norm"] for r in results]
        assert all(abs(n - ref_norm) <= 1e-5 * max(1.0, ref_norm) for n in norms), (tp, pp, norms, ref_norm)
