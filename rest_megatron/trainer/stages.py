"""The steps of one ResT training step, each a small function the loop calls by name.

    driver: score ──► advantages ──► to_samples ──► plan_updates ──► (scatter: each rank its share)
    every rank: (actor.token_stats) ──► attach_weights ──► (reference.token_stats) ──► attach_reference
                ──► ppo_updates

Only `attach_weights` and `score` know about the algorithm registries; the loop stays pseudocode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rest_megatron.algo.advantages import dynamic_sampling_keep_mask, get_advantage
from rest_megatron.algo.policy_loss import valid_mask
from rest_megatron.algo.rewards import get_reward
from rest_megatron.algo.weights import TokenWeightFn, get_token_weights
from rest_megatron.config import AlgorithmConfig, ParallelConfig
from rest_megatron.data.prompts import Prompt
from rest_megatron.ops.vocab_parallel import TokenStats
from rest_megatron.rollout.trajectory import UNTRAINABLE, Trajectory
from rest_megatron.trainer.actor import PolicyActor
from rest_megatron.trainer.batching import (
    MicroBatch,
    Share,
    TrainingSample,
    pack_rows,
    padded_length,
    share_microbatches,
    split_over_dp,
    unpack_rows,
)
from rest_megatron.trainer.run_log import region_means


def score(
    trajectories: Sequence[Trajectory],
    prompts: Sequence[Prompt],
    *,
    reward: str,
    step: int,
    params: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards [N] of trajectories (grouped: prompt i owns trajectories i*n .. i*n+n-1)
    and mean components."""
    fn = get_reward(reward)
    per_prompt = len(trajectories) // len(prompts)
    rewards, totals = [], {}
    for index, trajectory in enumerate(trajectories):
        prompt = prompts[index // per_prompt]
        turns = [m.get("content") or "" for m in trajectory.messages if m.get("role") == "assistant"]
        value, parts = fn(turns, prompt.ground_truth, step=step, tools=prompt.tools, **params)
        rewards.append(value)
        for key, part in parts.items():
            totals[key] = totals.get(key, 0.0) + part / len(trajectories)
    return torch.tensor(rewards, dtype=torch.float64), totals


def advantages(
    rewards: torch.Tensor, *, group_size: int, estimator: str, dynamic_sampling: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-trajectory advantages [N] and the keep mask [N] (dynamic sampling drops all-equal groups)."""
    values = get_advantage(estimator)(rewards, group_size=group_size)
    if dynamic_sampling:
        return values, dynamic_sampling_keep_mask(rewards, group_size=group_size)
    return values, torch.ones(len(rewards), dtype=torch.bool)


def to_samples(
    trajectories: Sequence[Trajectory], advantages: torch.Tensor, keep: torch.Tensor
) -> list[TrainingSample]:
    """The kept trajectories as training samples (non-finite sampling logprobs become 0, masked out).

    Failed and aborted trajectories keep their row (their group's advantages already count them) but
    train no token: their loss mask is all zero.
    """
    samples = []
    for trajectory, advantage, kept in zip(trajectories, advantages.tolist(), keep.tolist()):
        if kept:
            loss_mask = (
                [0] * len(trajectory.loss_mask) if trajectory.status in UNTRAINABLE else trajectory.loss_mask
            )
            samples.append(
                TrainingSample(
                    token_ids=trajectory.token_ids,
                    loss_mask=loss_mask,
                    sampling_logprobs=[lp if m else 0.0 for lp, m in zip(trajectory.logprobs, loss_mask)],
                    region_mask=trajectory.region_masks,
                    advantage=advantage,
                )
            )
    return samples


def attach_weights(
    microbatches: list[MicroBatch],
    stats: list[TokenStats],
    *,
    weights: str,
    params: dict[str, Any],
    step: int,
) -> dict[str, float]:
    """Add old-policy logprobs and ResT token weights to each micro-batch; return region metrics.

    The metrics are this rank's means per primary region of entropy and weight, plus the mean
    |sampling logprob − trainer logprob| (train/inference drift) over trained tokens.
    """
    fn = get_token_weights(weights)
    entropy, weight, regions, mask, drift = [], [], [], [], []
    for mb, st in zip(microbatches, stats):
        mb["old_logprobs"] = st.logprob
        mb["weights"] = per_trajectory(
            fn,
            mb.get("cu_seqlens"),
            loss_mask=mb["loss_mask"],
            region_mask=mb["region_mask"],
            collision=st.collision,
            entropy=st.entropy,
            step=step,
            **params,
        )
        trained = valid_mask(mb["loss_mask"], st.logprob)
        drift.append(((mb["sampling_logprobs"] - st.logprob).abs() * trained)[trained])
        entropy.append(st.entropy)
        weight.append(mb["weights"])
        regions.append(mb["region_mask"])
        mask.append(mb["loss_mask"])
    cat = [torch.cat(x) for x in (entropy, weight, regions, mask)]
    metrics = {f"entropy/{k}": v for k, v in region_means(cat[0], cat[2], cat[3]).items()}
    metrics.update({f"weight/{k}": v for k, v in region_means(cat[1], cat[2], cat[3]).items()})
    drift_all = torch.cat(drift)
    metrics["logprob_drift"] = float(drift_all.mean()) if drift_all.numel() else 0.0
    return metrics


def attach_reference(microbatches: list[MicroBatch], reference_stats: list[TokenStats]) -> None:
    """Add the frozen reference policy's log-probs (`ref_logprobs`, for the KL term of the loss)."""
    for mb, st in zip(microbatches, reference_stats):
        mb["ref_logprobs"] = st.logprob


def per_trajectory(
    weights_fn: TokenWeightFn, cu_seqlens: torch.Tensor | None, *, step: int, **tensors_and_params: Any
) -> torch.Tensor:
    """Token weights normalized per trajectory: per row, or per segment of a packed row (`cu_seqlens`)."""
    if cu_seqlens is None:
        return weights_fn(step=step, **tensors_and_params)
    unpacked = {
        k: unpack_rows(v, cu_seqlens) if isinstance(v, torch.Tensor) else v
        for k, v in tensors_and_params.items()
    }
    return pack_rows(weights_fn(step=step, **unpacked), cu_seqlens)


def update_seed(data_seed: int, step: int) -> int:
    """The mini-batch shuffle seed of a training step: a function of (data.seed, step) only, so a resumed
    run splits a step exactly as the uninterrupted run did."""
    return (data_seed * 1_000_003 + step * 7919 + 17) % 2**63


def plan_updates(
    samples: Sequence[TrainingSample],
    *,
    num_updates: int,
    seed: int,
    dp_size: int,
    micro_batch_size: int,
    length_multiple: int,
    packed: bool,
) -> list[list[Share]]:
    """Driver: the step's trajectories shuffled (`seed`) and cut into `num_updates` mini-batches, each split
    over DP ranks. Returns, per DP rank, its share of every update, in update order.

    Mini-batches differ in size by at most one trajectory. With fewer trajectories than updates (dynamic
    sampling dropped groups) the step makes one update per trajectory. All rows of the step have one
    padded length, so every rank and pipeline stage sees one activation shape.
    """
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [samples[i] for i in order]
    length = padded_length(samples, length_multiple)
    chunks = [c.tolist() for c in torch.arange(len(shuffled)).tensor_split(min(num_updates, len(shuffled)))]
    per_update = [
        split_over_dp(
            [shuffled[i] for i in chunk],
            dp_size=dp_size,
            micro_batch_size=micro_batch_size,
            length=length,
            packed=packed,
        )
        for chunk in chunks
    ]
    return [[update[rank] for update in per_update] for rank in range(dp_size)]


def microbatches(
    share: Share, parallel: ParallelConfig, *, pad_id: int, device: torch.device | str = "cpu"
) -> list[MicroBatch]:
    """This rank's micro-batches of one update on `device`, built from its share only (`parallel`: the
    config's parallel section: micro_batch_size, pack_sequences)."""
    return share_microbatches(
        share,
        micro_batch_size=parallel.micro_batch_size,
        pad_id=pad_id,
        packed=parallel.pack_sequences,
        device=device,
    )


def ppo_updates(
    actor: PolicyActor, updates: list[list[MicroBatch]], algorithm: AlgorithmConfig, *, epochs: int
) -> dict[str, float]:
    """`epochs` passes over the mini-batches, one optimizer update each (`actor.train_step`: its own
    loss denominator); the step's metrics from `combine_update_metrics`."""
    return combine_update_metrics(
        [actor.train_step(mbs, algorithm) for _ in range(epochs) for mbs in updates]
    )


# Per-update metrics also recorded update by update (`ppo/u<i>/<key>`) and as the last update's value:
# the first update's ratios are exactly 1, so the mean alone hides how far later updates moved.
PER_UPDATE_KEYS = (
    "clip_frac_low",
    "clip_frac_high",
    "dual_clip_frac",
    "ratio_std",
    "ratio_max",
    "ratio_min",
    "ref_kl",
)


def combine_update_metrics(per_update: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from its updates: the mean over updates, except extremes (ratio_max/min: max/min)
    and `lr` (the last); `num_updates`; `<key>/last` and `ppo/u<i>/<key>` for the keys of PER_UPDATE_KEYS."""
    extremes = {"ratio_max": max, "ratio_min": min, "lr": lambda values: values[-1]}
    out = {"num_updates": float(len(per_update))}
    for key in per_update[0]:
        values = [m[key] for m in per_update]
        out[key] = extremes.get(key, lambda v: sum(v) / len(v))(values)
        if key in PER_UPDATE_KEYS:
            out[f"{key}/last"] = values[-1]
            out.update({f"ppo/u{i + 1}/{key}": v for i, v in enumerate(values)})
    return out
