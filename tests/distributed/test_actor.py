"""The Megatron policy actor on real gloo ranks: layout invariance of the ResT step, ratio 1, no logits.

One global batch (seeded) is split over DP ranks and micro-batches; every layout starts from the
same weights (a distributed checkpoint made at TP1×PP1) and takes one optimizer step with paper-mode
ResT weights and PPO-clip. Loss, grad norm and the updated weights must match TP1×PP1×DP1.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from rest_megatron.algo.regions import NUM_REGIONS
from rest_megatron.algo.weights import get_token_weights
from rest_megatron.assets import tiny_hf_config
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import model_spec_from_hf
from rest_megatron.trainer.actor import build_actor

NUM_SEQS, SEQ, MICRO_BATCH, STEP = 8, 20, 2, 150
OBJECTIVE = AlgorithmConfig(clip_low=0.2, clip_high=0.28, dual_clip=3.0)


def _global_batch(seed: int, vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (NUM_SEQS, SEQ + 1), generator=gen)
    loss_mask = torch.zeros(NUM_SEQS, SEQ)
    for row in range(NUM_SEQS):
        start = int(torch.randint(4, 10, (), generator=gen))
        loss_mask[row, start:] = (torch.rand(SEQ - start, generator=gen) > 0.15).float()
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": loss_mask,
        "region_mask": 1 << torch.randint(0, NUM_REGIONS, (NUM_SEQS, SEQ), generator=gen),
        "advantages": torch.randn(NUM_SEQS, 1, generator=gen).expand(NUM_SEQS, SEQ).contiguous(),
        "old_logprob_noise": 0.2 * torch.randn(NUM_SEQS, SEQ, generator=gen),
    }


def _local_microbatches(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    from megatron.core import parallel_state

    dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    rows = NUM_SEQS // dp
    local = {k: v[rank * rows : (rank + 1) * rows] for k, v in batch.items()}
    return [{k: v[i : i + MICRO_BATCH] for k, v in local.items()} for i in range(0, rows, MICRO_BATCH)]


def _build(tp: int, pp: int, init_dir: str, *, save_init: bool, distributed_optimizer: bool = False):
    from megatron.core import dist_checkpointing

    init_model_parallel(ParallelLayout(tp=tp, pp=pp), seed=1234, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    # Adam's first step is lr·g/(|g|+eps): with the default eps=1e-8, elements whose gradient is ~1e-8
    # turn float32 reduction-order noise into update noise of up to lr. eps=1e-5 keeps the update a
    # well-conditioned function of the gradient, so comparing weights tests the gradient.
    settings = OptimizerConfig(num_steps=1, lr=1e-3, clip_grad=1.0, adam_eps=1e-5)
    actor = build_actor(
        spec, settings, use_distributed_optimizer=distributed_optimizer, tp=tp, pp=pp, chunk_size=7
    )
    if save_init:
        if dist.get_rank() == 0:
            os.makedirs(init_dir, exist_ok=True)
        dist.barrier()
        dist_checkpointing.save(actor.network.sharded_state_dict(), init_dir)
    else:
        actor.network.load_state_dict(dist_checkpointing.load(actor.network.sharded_state_dict(), init_dir))
    return spec, actor


def _resT_step(
    tp: int,
    pp: int,
    init_dir: str,
    out_dir: str,
    seed: int,
    save_init: bool,
    distributed_optimizer: bool = False,
) -> dict:
    from megatron.core import dist_checkpointing

    spec, actor = _build(tp, pp, init_dir, save_init=save_init, distributed_optimizer=distributed_optimizer)
    microbatches = _local_microbatches(_global_batch(seed, spec.vocab_size))
    stats = actor.token_stats(microbatches)
    paper = get_token_weights("paper")
    for mb, st in zip(microbatches, stats):
        mb["old_logprobs"] = st.logprob + mb.pop("old_logprob_noise") * mb["loss_mask"]
        mb["weights"] = paper(
            loss_mask=mb["loss_mask"], region_mask=mb["region_mask"], step=STEP, collision=st.collision
        )
    metrics = actor.train_step(microbatches, OBJECTIVE)
    if dist.get_rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(actor.network.sharded_state_dict(), out_dir)
    return metrics


def _ratio_is_one(init_dir: str, seed: int) -> dict:
    spec, actor = _build(2, 2, init_dir, save_init=False)
    microbatches = _local_microbatches(_global_batch(seed, spec.vocab_size))
    for mb, st in zip(microbatches, actor.token_stats(microbatches)):
        mb["old_logprobs"] = st.logprob
        mb["weights"] = mb["loss_mask"]
        mb.pop("old_logprob_noise")
    return actor.train_step(microbatches, OBJECTIVE)


def _updated_weights_match(init_dir: str, reference_dir: str, other_dirs: list[str]) -> list:
    """[largest update of the reference step, then per layout (largest difference, its parameter)]."""
    from megatron.core import dist_checkpointing

    _, actor = _build(1, 1, reference_dir, save_init=False)
    reference = {k: v.detach().clone() for k, v in actor.network.state_dict().items() if v is not None}
    worst = []
    actor.network.load_state_dict(dist_checkpointing.load(actor.network.sharded_state_dict(), init_dir))
    initial = actor.network.state_dict()
    worst.append(max(float((initial[k] - v).abs().max()) for k, v in reference.items() if torch.is_tensor(v)))
    for directory in other_dirs:
        actor.network.load_state_dict(dist_checkpointing.load(actor.network.sharded_state_dict(), directory))
        state = actor.network.state_dict()
        worst.append(
            max((float((state[k] - v).abs().max()), k) for k, v in reference.items() if torch.is_tensor(v))
        )
    return worst


def test_rest_step_is_layout_invariant(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    init = str(tmp_path / "init")
    ref = gloo(1).run(_resT_step, 1, 1, init, str(tmp_path / "ref"), seed, True)[0]
    assert ref["num_tokens"] > 50 and 0 < ref["clip_frac_low"] + ref["clip_frac_high"] < 1, ref

    # (world size, TP, PP, distributed optimizer); DP is what remains of the world.
    layouts = {
        "dp2": (2, 1, 1, False),
        "dp4": (4, 1, 1, False),
        "tp2": (4, 2, 1, False),
        "pp2": (4, 1, 2, False),
        "tp2pp2": (4, 2, 2, False),
        "dp2-distributed-optimizer": (2, 1, 1, True),
    }
    out_dirs = []
    for name, (world, tp, pp, distributed_optimizer) in layouts.items():
        out_dirs.append(str(tmp_path / name))
        results = gloo(world).run(_resT_step, tp, pp, init, out_dirs[-1], seed, False, distributed_optimizer)
        for metrics in results:
            for key in (
                "loss",
                "grad_norm",
                "pg_loss",
                "ratio",
                "clip_frac_low",
                "clip_frac_high",
                "entropy",
            ):
                assert metrics[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (name, key)
            assert metrics["num_tokens"] == ref["num_tokens"], name

    largest_update, *worst = gloo(1).run(_updated_weights_match, init, str(tmp_path / "ref"), out_dirs)[0]
    assert largest_update > 5e-4  # the step really moved the weights
    assert max(w for w, _ in worst) < 1e-5, dict(zip(layouts, worst))


def test_forward_only_logprobs_equal_train_pass(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    init = str(tmp_path / "init")
    gloo(1).run(_resT_step, 1, 1, init, str(tmp_path / "unused"), seed, True)
    for metrics in gloo(4).run(_ratio_is_one, init, seed):
        assert abs(metrics["ratio_max"] - 1.0) < 1e-6 and abs(metrics["ratio_min"] - 1.0) < 1e-6, metrics
        assert metrics["clip_frac_low"] == 0.0 and metrics["clip_frac_high"] == 0.0


def _tempered_stats_against_logits(seed: int, temperature: float) -> float:
    """Largest |log π_T − reference| where the reference is log_softmax(logits / T) of the model's
    own logits."""
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    init_model_parallel(ParallelLayout(tp=1, pp=1), seed=1234, timeout_s=120)
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-3), chunk_size=7, temperature=temperature)
    batch = _global_batch(seed, spec.vocab_size)
    microbatch = {k: batch[k][:2] for k in ("tokens", "labels", "loss_mask")}
    ours = actor.token_stats([microbatch])[0]
    positions = torch.arange(microbatch["tokens"].shape[1]).expand_as(microbatch["tokens"])
    with torch.no_grad():
        logits = actor.network(microbatch["tokens"], positions, None)[
            ..., : spec.vocab_size
        ].double()  # [B, S, V]
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    reference_logprob = log_p.gather(-1, microbatch["labels"][..., None])[..., 0]
    reference_entropy = -(log_p.exp() * log_p).sum(-1)
    return max(
        float((ours.logprob - reference_logprob).abs().max()),
        float((ours.entropy - reference_entropy).abs().max()),
    )


def test_stats_follow_the_sampling_temperature(gloo) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    assert gloo(1).run(_tempered_stats_against_logits, seed, 0.7)[0] < 1e-4, seed
