"""The steps of one ResT training step, each a small function the loop calls by name.

    score ──► advantages ──► to_samples ──► (actor.token_stats) ──► attach_weights ──► train

Only `attach_weights` and `score` know about the algorithm registries; the loop stays pseudocode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rest_megatron.algo.advantages import dynamic_sampling_keep_mask, get_advantage
from rest_megatron.algo.policy_loss import valid_mask
from rest_megatron.algo.rewards import get_reward
from rest_megatron.algo.weights import get_token_weights
from rest_megatron.data.prompts import Prompt
from rest_megatron.ops.vocab_parallel import TokenStats
from rest_megatron.rollout.trajectory import UNTRAINABLE
from rest_megatron.trainer.batching import MicroBatch, TrainingSample, pack_rows, unpack_rows
from rest_megatron.trainer.run_log import region_means


def score(
    trajectories: Sequence[Any], prompts: Sequence[Prompt], *, reward: str, step: int, params: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards [N] of trajectories (grouped: prompt i owns trajectories i*n .. i*n+n-1) and mean components."""
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


def to_samples(trajectories: Sequence[Any], advantages: torch.Tensor, keep: torch.Tensor) -> list[TrainingSample]:
    """The kept trajectories as training samples (non-finite sampling logprobs become 0, masked out).

    Failed and aborted trajectories keep their row (their group's advantages already count them) but
    train no token: their loss mask is all zero.
    """
    samples = []
    for trajectory, advantage, kept in zip(trajectories, advantages.tolist(), keep.tolist()):
        if kept:
            loss_mask = ([0] * len(trajectory.loss_mask) if trajectory.status in UNTRAINABLE
                         else trajectory.loss_mask)
            samples.append(TrainingSample(
                token_ids=trajectory.token_ids,
                loss_mask=loss_mask,
                sampling_logprobs=[lp if m else 0.0 for lp, m in zip(trajectory.logprobs, loss_mask)],
                region_mask=trajectory.region_masks,
                advantage=advantage,
            ))
    return samples


def attach_weights(
    microbatches: list[MicroBatch], stats: list[TokenStats], *, weights: str, params: dict[str, Any], step: int
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
            fn, mb.get("cu_seqlens"), loss_mask=mb["loss_mask"], region_mask=mb["region_mask"],
            collision=st.collision, entropy=st.entropy, step=step, **params,
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


def per_trajectory(weights_fn: Any, cu_seqlens: torch.Tensor | None, *, step: int, **tensors_and_params: Any
                   ) -> torch.Tensor:
    """Token weights normalized per trajectory: per row, or per segment of a packed row (`cu_seqlens`)."""
    if cu_seqlens is None:
        return weights_fn(step=step, **tensors_and_params)
    unpacked = {k: unpack_rows(v, cu_seqlens) if isinstance(v, torch.Tensor) else v for k, v in tensors_and_params.items()}
    return pack_rows(weights_fn(step=step, **unpacked), cu_seqlens)
