"""PPO mini-batches on real gloo ranks: the path `loop.rl_step` takes after the rollout.

The driver plans a step of 16 trajectories as 2 updates (`stages.plan_updates`) and scatters each DP
rank its share (`scatter_to_dp`); every rank builds its rows, computes the old policy once
(`token_stats`), attaches ResT weights and makes the updates (`stages.ppo_updates`). The first update's
ratios are exactly 1; the second update sees the first one's weights, so its ratios move and, with a
narrow clip range, clipping acts. Each update's loss, gradient norm and clip fractions are the same
whatever the micro-batch size and the DP size. Separately: a rank receives its share's bytes only.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.distributed as dist

from rest_megatron.algo.regions import NUM_REGIONS
from rest_megatron.assets import tiny_hf_config
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import model_spec_from_hf
from rest_megatron.trainer import stages
from rest_megatron.trainer.actor import build_actor
from rest_megatron.trainer.batching import Share, TrainingSample
from rest_megatron.trainer.rollout_stage import scatter_to_dp

NUM_SAMPLES, NUM_UPDATES, STEP = 16, 2, 150
# A narrow clip range, so that the second update's ratios (one Adam step of lr 1e-3 away) reach it.
OBJECTIVE = AlgorithmConfig(clip_low=0.01, clip_high=0.01, dual_clip=3.0)


def _samples(seed: int, vocab: int) -> list[TrainingSample]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for index in range(NUM_SAMPLES):
        n = int(torch.randint(12, 30, (), generator=gen))
        prompt = int(torch.randint(3, 8, (), generator=gen))
        mask = [0] * prompt + [1] * (n - prompt)
        out.append(
            TrainingSample(
                token_ids=torch.randint(0, vocab, (n,), generator=gen).tolist(),
                loss_mask=mask,
                sampling_logprobs=[0.0] * n,
                region_mask=(1 << torch.randint(0, NUM_REGIONS, (n,), generator=gen)).tolist(),
                advantage=float(torch.randn((), generator=gen)) if index % 4 else 0.0,
            )
        )
    return out


def _ppo_step(micro_batch_size: int, seed: int) -> list[dict[str, float]]:
    from megatron.core import parallel_state

    init_model_parallel(
        ParallelLayout(tp=1, pp=1), seed=1234, timeout_s=120
    )  # same initial weights everywhere
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    actor = build_actor(
        spec, OptimizerConfig(num_steps=1, lr=1e-3, clip_grad=1.0, adam_eps=1e-5), chunk_size=7
    )
    plan = None
    if dist.get_rank() == 0:
        plan = stages.plan_updates(
            _samples(seed, spec.vocab_size),
            num_updates=NUM_UPDATES,
            seed=stages.update_seed(seed, STEP),
            dp_size=parallel_state.get_data_parallel_world_size(),
            micro_batch_size=micro_batch_size,
            length_multiple=8,
            packed=False,
        )
    share, _ = scatter_to_dp(plan)
    updates = [stages.share_microbatches(s, micro_batch_size=micro_batch_size, pad_id=0) for s in share]
    everything = [mb for update in updates for mb in update]
    stages.attach_weights(everything, actor.token_stats(everything), weights="paper", params={}, step=STEP)
    metrics = stages.ppo_updates(actor, updates, OBJECTIVE, epochs=1)
    metrics["scheduler_steps"] = float(actor.scheduler.num_steps)  # the LR schedule advanced once per update
    return [
        {k[len(f"ppo/u{u}/") :]: v for k, v in metrics.items() if k.startswith(f"ppo/u{u}/")}
        for u in range(1, NUM_UPDATES + 1)
    ] + [metrics]


def test_second_update_moves_the_ratio_and_each_update_is_split_invariant(gloo) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    *reference, whole = gloo(1).run(_ppo_step, 4, seed)[0]
    first, second = reference
    assert whole["num_updates"] == whole["scheduler_steps"] == NUM_UPDATES
    assert first["ratio_max"] == pytest.approx(1.0, abs=1e-6) and first["ratio_min"] == pytest.approx(
        1.0, abs=1e-6
    )
    assert first["clip_frac_low"] == first["clip_frac_high"] == 0.0
    assert second["ratio_std"] > 1e-3 and second["ratio_max"] - second["ratio_min"] > 2e-2, second
    assert second["clip_frac_low"] + second["clip_frac_high"] > 0.05, second  # clipping acts

    for world, micro in ((1, 1), (2, 2), (2, 1)):
        for rank_metrics in gloo(world).run(_ppo_step, micro, seed):
            whole_other = rank_metrics.pop()
            assert whole_other["num_updates"] == NUM_UPDATES
            for index, (ours, theirs) in enumerate(zip(rank_metrics, reference)):
                for key in ("ratio_std", "ratio_max", "ratio_min"):
                    assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (
                        world,
                        micro,
                        index,
                        key,
                    )
                for key in ("clip_frac_low", "clip_frac_high"):  # a token at the clip edge may flip
                    assert ours[key] == pytest.approx(theirs[key], abs=0.02), (world, micro, index, key)
            for key in ("loss", "grad_norm", "pg_loss"):  # means over the updates
                assert whole_other[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), (world, micro, key)


def _received_bytes(tp: int) -> tuple[int, int, int]:
    """(bytes this rank received, its share pickled, the whole step pickled) at DP = world / tp."""
    from megatron.core import parallel_state

    init_model_parallel(ParallelLayout(tp=tp, pp=1), seed=1234, timeout_s=120)
    dp = parallel_state.get_data_parallel_world_size()
    plan = stages.plan_updates(
        _samples(5, 1000),
        num_updates=NUM_UPDATES,
        seed=1,
        dp_size=dp,
        micro_batch_size=1,
        length_multiple=8,
        packed=False,
    )
    share, received = scatter_to_dp(plan if dist.get_rank() == 0 else None)
    assert share == plan[parallel_state.get_data_parallel_rank()]
    assert all(isinstance(s, Share) for s in share)
    return received, len(pickle.dumps(share)), len(pickle.dumps(plan))


@pytest.mark.parametrize("tp", [1, 2])
def test_a_rank_receives_only_its_data_parallel_share(gloo, tp: int) -> None:
    results = gloo(2 * tp).run(_received_bytes, tp)
    assert results[0][0] == 0  # the driver keeps its own share
    for received, own, whole in results[1:]:
        assert received == own + 8  # its share and the 8-byte size, nothing else
        assert received < 0.6 * whole
