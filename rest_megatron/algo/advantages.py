"""Group-relative advantages and the dynamic-sampling filter (docs/design.md §6).

Every prompt is rolled out G times; the G trajectories form a group. An estimator maps per-trajectory
rewards [N] and group membership (either `group_ids` [N], any integer labels, or a fixed `group_size` for
consecutive groups) to per-trajectory advantages [N]; `broadcast_to_tokens` spreads them over the response
tokens. Outcome rewards make every token of a trajectory share its advantage.

Statistics are computed in float64 and returned in the rewards' floating dtype (float32 at least).
A group of one has no baseline: its advantage is 0 for every estimator (verl's GRPO instead uses mean 0,
std 1 there, i.e. the raw reward; we find a signal without a baseline more harmful than none).
"""

from __future__ import annotations

from typing import Protocol

import torch

from rest_megatron.algo.registry import Registry


class AdvantageFn(Protocol):
    """fn(rewards [N], *, group_ids=None, group_size=None, **params) -> advantages [N]."""

    def __call__(
        self,
        rewards: torch.Tensor,
        *,
        group_ids: torch.Tensor | None = None,
        group_size: int | None = None,
        **params: object,
    ) -> torch.Tensor: ...


_ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")
register_advantage = _ADVANTAGES.register
get_advantage = _ADVANTAGES.get
advantage_names = _ADVANTAGES.names


def group_index(
    num: int, *, group_ids: torch.Tensor | None = None, group_size: int | None = None, device=None
) -> tuple[torch.Tensor, int]:
    """Contiguous group index [N] in [0, G) and G, from labels or a fixed size of consecutive groups."""
    if (group_ids is None) == (group_size is None):
        raise ValueError("give exactly one of group_ids (per-trajectory labels) or group_size")
    if group_ids is not None:
        if group_ids.shape != (num,):
            raise ValueError(f"group_ids must have shape [{num}], got {tuple(group_ids.shape)}")
        labels, index = torch.unique(group_ids, return_inverse=True)
        return index.to(device), labels.numel()
    assert group_size is not None
    if group_size <= 0 or num % group_size != 0:
        raise ValueError(f"group_size must divide the number of trajectories ({num}), got {group_size}")
    return torch.arange(num, device=device) // group_size, num // group_size


def _group_stats(
    rewards: torch.Tensor, group_ids: torch.Tensor | None, group_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shifted rewards [N], their group mean [N], unbiased group std [N], group size [N]), float64.

    Rewards are shifted by their group's minimum first: differences r − mean are unchanged, a group of
    equal rewards gets exactly 0 (not a rounding residue), and large offsets lose no precision.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one per trajectory, shape [N]; got {tuple(rewards.shape)}")
    r = rewards.detach().to(torch.float64)
    index, num_groups = group_index(r.shape[0], group_ids=group_ids, group_size=group_size, device=r.device)
    low = torch.full((num_groups,), float("inf"), dtype=r.dtype, device=r.device)
    r = r - low.scatter_reduce(0, index, r, reduce="amin")[index]
    count = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(
        0, index, torch.ones_like(r)
    )
    total = torch.zeros_like(count).index_add_(0, index, r)
    mean = (total / count)[index]  # [N]
    sq = torch.zeros_like(count).index_add_(0, index, (r - mean).square())
    var = sq / (count - 1).clamp_min(1)
    return r, mean, var.sqrt()[index], count[index]


def _out_dtype(rewards: torch.Tensor) -> torch.dtype:
    if rewards.is_floating_point():
        return torch.promote_types(rewards.dtype, torch.float32)
    return torch.float32


@register_advantage("grpo")
def grpo_advantages(
    rewards: torch.Tensor,
    *,
    group_ids: torch.Tensor | None = None,
    group_size: int | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO: Â_i = (r_i − mean_g) / (std_g + eps), std unbiased (Bessel), as torch.std and verl."""
    r, mean, std, count = _group_stats(rewards, group_ids, group_size)
    adv = (r - mean) / (std + eps)
    return torch.where(count > 1, adv, torch.zeros_like(adv)).to(_out_dtype(rewards))


@register_advantage("dr_grpo")
def dr_grpo_advantages(
    rewards: torch.Tensor, *, group_ids: torch.Tensor | None = None, group_size: int | None = None
) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): Â_i = r_i − mean_g, no division by the group std."""
    r, mean, _, count = _group_stats(rewards, group_ids, group_size)
    return torch.where(count > 1, r - mean, torch.zeros_like(r)).to(_out_dtype(rewards))


@register_advantage("rloo")
def rloo_advantages(
    rewards: torch.Tensor, *, group_ids: torch.Tensor | None = None, group_size: int | None = None
) -> torch.Tensor:
    """RLOO: Â_i = r_i − mean_{j≠i} r_j = G/(G−1) · (r_i − mean_g) (leave-one-out baseline)."""
    r, mean, _, count = _group_stats(rewards, group_ids, group_size)
    adv = (r - mean) * count / (count - 1).clamp_min(1)
    return torch.where(count > 1, adv, torch.zeros_like(adv)).to(_out_dtype(rewards))


def broadcast_to_tokens(advantages: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """[N] per-trajectory advantages -> [N, T], the trajectory's advantage on masked tokens, 0 elsewhere."""
    adv = advantages.detach().unsqueeze(-1).expand(loss_mask.shape)  # [N, T]
    return torch.where(loss_mask != 0, adv, torch.zeros_like(adv))


def dynamic_sampling_keep_mask(
    rewards: torch.Tensor,
    *,
    group_ids: torch.Tensor | None = None,
    group_size: int | None = None,
    atol: float = 0.0,
) -> torch.Tensor:
    """[N] bool: True for trajectories whose group's rewards are not all equal (max − min > atol).

    DAPO-style dynamic sampling: a group whose rewards are all equal has all-zero advantages and only adds
    noise (and KL/entropy terms), so it is dropped. Groups of one are always dropped.
    """
    r = rewards.detach().to(torch.float64)
    index, num_groups = group_index(r.shape[0], group_ids=group_ids, group_size=group_size, device=r.device)
    high = torch.full((num_groups,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(
        0, index, r, reduce="amax"
    )
    low = torch.full((num_groups,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(
        0, index, r, reduce="amin"
    )
    return (high - low > atol)[index]
