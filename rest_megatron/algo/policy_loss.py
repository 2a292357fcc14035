"""Per-token policy losses (docs/design.md §6), chosen by name.

A policy loss takes tensors and keyword parameters and returns `(loss [B, T], metrics)`. The per-token
loss is 0 wherever the token is not valid (see `valid_mask`); aggregation.py turns it into the step loss.
Metrics are detached *sums* plus the count they are divided by, so that a caller can all-reduce numerator
and denominator separately (SUM) and divide once: averaging per-rank means would weight ranks wrongly.

Non-finite logprobs: a token whose sampling or old-policy logprob is not finite (a rollout engine that
returned -inf or NaN, a truncated response) must leave both the numerator and the denominator of the loss.
`valid_mask` is the one place that decides this. The trainer computes
`mask = valid_mask(loss_mask, sampling_logprobs, old_logprobs)` once per batch and passes that mask to
the token weights, the denominator and the loss; the loss also re-applies it to its own inputs (old and
reference logprobs, advantages) and replaces invalid values before any arithmetic, so no inf or NaN
reaches the forward value or the backward pass.
"""

from __future__ import annotations

from typing import Protocol

import torch

from rest_megatron.algo.registry import Registry


def valid_mask(loss_mask: torch.Tensor, *tensors: torch.Tensor | None) -> torch.Tensor:
    """[B, T] bool: loss_mask != 0 and every given tensor finite at that position (None is skipped)."""
    mask = loss_mask != 0
    for t in tensors:
        if t is not None:
            mask = mask & torch.isfinite(t)
    return mask


class PolicyLossFn(Protocol):
    """fn(*, logprobs, old_logprobs, advantages, loss_mask, **params) -> (loss [B, T], metrics)."""

    def __call__(
        self,
        *,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        loss_mask: torch.Tensor,
        **params: object,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


_POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
register_policy_loss = _POLICY_LOSSES.register
get_policy_loss = _POLICY_LOSSES.get
policy_loss_names = _POLICY_LOSSES.names


_KL_ESTIMATORS: Registry = Registry("KL estimator (kl_type)")
register_kl_estimator = _KL_ESTIMATORS.register
get_kl_estimator = _KL_ESTIMATORS.get
kl_estimator_names = _KL_ESTIMATORS.names


@register_kl_estimator("k1")
def kl_k1(delta: torch.Tensor) -> torch.Tensor:
    """k1 = δ: unbiased, but negative on some samples."""
    return delta


@register_kl_estimator("k2")
def kl_k2(delta: torch.Tensor) -> torch.Tensor:
    """k2 = ½ δ²: non-negative, biased; its gradient is that of the reverse KL."""
    return 0.5 * delta.square()


@register_kl_estimator("k3")
def kl_k3(delta: torch.Tensor) -> torch.Tensor:
    """k3 = e^{−δ} + δ − 1: unbiased and always >= 0."""
    return torch.exp(-delta) + delta - 1.0


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from samples of π_θ (Schulman's k1, k2, k3, registered by name)
    as a function of δ = log π_θ − log π_ref. δ is clamped to ±20 so that k3's exponential cannot overflow.
    """
    estimator = get_kl_estimator(kl_type)
    return estimator((logprobs - ref_logprobs).clamp(-20.0, 20.0))


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    *,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
    entropy_coef: float = 0.0,
    log_ratio_clamp: float = 20.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate with dual clip, optional KL to a reference and an entropy bonus.

    Per valid token (all tensors [B, T]; `advantages` already broadcast to tokens):
        ρ   = exp(clamp(log π_θ − log π_old, ±log_ratio_clamp))
        L   = max(−Â ρ, −Â clip(ρ, 1 − clip_low, 1 + clip_high))
        L   = min(L, −Â·dual_clip)                    where Â < 0 (skipped when dual_clip is None)
        L  += kl_coef · KL_{kl_type}(π_θ ‖ π_ref)     (needs ref_logprobs when kl_coef != 0)
        L  −= entropy_coef · H                        (needs a differentiable `entropy` when
                                                       entropy_coef != 0)
    and L = 0 on tokens that are not valid (loss_mask 0, or non-finite old/ref logprob or advantage).

    Gradients flow only through `logprobs` and `entropy`; old_logprobs, ref_logprobs and advantages are
    treated as constants (detached here). The log-ratio clamp (as in verl) keeps exp finite; beyond it the
    ratio's gradient is zero.

    Metrics (detached scalars). Unless stated, divide by `num_tokens` after a SUM all-reduce of both:
        num_tokens          number of valid tokens (the denominator of every *_sum metric)
        pg_loss_sum         Σ clipped surrogate (without KL and entropy terms), unweighted
        clip_frac_low_sum   Σ 1[Â < 0 and ρ < 1 − clip_low]   (lower clip active)
        clip_frac_high_sum  Σ 1[Â > 0 and ρ > 1 + clip_high]  (upper clip active)
        dual_clip_frac_sum  Σ 1[Â < 0 and ρ > dual_clip]      (dual clip active)
        ppo_kl_sum          Σ (log π_old − log π_θ), the k1 estimate of KL(π_old ‖ π_θ)
        ratio_sum           Σ ρ
        ratio_sq_sum        Σ ρ²  (with ratio_sum and num_tokens: the spread of ρ over the update)
        ratio_max           max ρ (all-reduce with MAX; −inf when there are no valid tokens)
        ratio_min           min ρ (all-reduce with MIN; +inf when there are no valid tokens)
        ref_kl_sum          Σ KL_{kl_type}(π_θ ‖ π_ref)   (only when ref_logprobs is given)
        entropy_sum         Σ H                            (only when entropy is given)
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (the paper uses 3), got {dual_clip}")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs from the reference-policy forward pass")
    if entropy_coef != 0.0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs a differentiable `entropy` tensor")

    valid = valid_mask(loss_mask, old_logprobs, advantages, ref_logprobs)  # [B, T]
    zeros = torch.zeros_like(logprobs)
    # Replace invalid inputs by harmless values *before* the arithmetic: torch.where alone would still
    # back-propagate 0 · inf = NaN from the unselected branch.
    safe_old = torch.where(valid, old_logprobs.detach(), logprobs.detach())  # log ratio 0 there
    adv = torch.where(valid, advantages.detach(), zeros).to(logprobs.dtype)

    log_ratio = (logprobs - safe_old).clamp(-log_ratio_clamp, log_ratio_clamp)  # [B, T]
    ratio = torch.exp(log_ratio)
    surrogate = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    pg_loss = torch.maximum(surrogate, clipped)
    if dual_clip is not None:
        pg_loss = torch.where(adv < 0, torch.minimum(pg_loss, -adv * dual_clip), pg_loss)

    loss = pg_loss
    ref_kl = None
    if ref_logprobs is not None:
        safe_ref = torch.where(valid, ref_logprobs.detach(), logprobs.detach())
        ref_kl = kl_estimate(logprobs, safe_ref, kl_type)
        if kl_coef != 0.0:
            loss = loss + kl_coef * ref_kl
    safe_entropy = None
    if entropy is not None:
        safe_entropy = torch.where(valid & torch.isfinite(entropy), entropy, zeros)
        if entropy_coef != 0.0:
            loss = loss - entropy_coef * safe_entropy
    loss = torch.where(valid, loss, zeros)

    with torch.no_grad():
        fvalid = valid.to(logprobs.dtype)
        ratio_d = ratio.detach()
        metrics = {
            "num_tokens": fvalid.sum(),
            "pg_loss_sum": torch.where(valid, pg_loss.detach(), zeros).sum(),
            "clip_frac_low_sum": (valid & (adv < 0) & (ratio_d < 1.0 - clip_low)).sum().to(fvalid.dtype),
            "clip_frac_high_sum": (valid & (adv > 0) & (ratio_d > 1.0 + clip_high)).sum().to(fvalid.dtype),
            "dual_clip_frac_sum": (
                (valid & (adv < 0) & (ratio_d > dual_clip)).sum().to(fvalid.dtype)
                if dual_clip is not None
                else fvalid.new_zeros(())
            ),
            "ppo_kl_sum": torch.where(valid, -log_ratio.detach(), zeros).sum(),
            "ratio_sum": torch.where(valid, ratio_d, zeros).sum(),
            "ratio_sq_sum": torch.where(valid, ratio_d.square(), zeros).sum(),
            "ratio_max": torch.where(valid, ratio_d, torch.full_like(ratio_d, float("-inf"))).amax(),
            "ratio_min": torch.where(valid, ratio_d, torch.full_like(ratio_d, float("inf"))).amin(),
        }
        if ref_kl is not None:
            metrics["ref_kl_sum"] = torch.where(valid, ref_kl.detach(), zeros).sum()
        if safe_entropy is not None:
            metrics["entropy_sum"] = safe_entropy.detach().sum()
    return loss, metrics
