"""ResT token weights: which response tokens the policy gradient leans on (docs/design.md §4).

ResT (arXiv 2509.21826, "ResT: Reshaping Token-Level Policy Gradients for Tool-Use LLMs") multiplies each
token's policy-gradient term by a weight w_t. With loss mask m_t (1 where the policy sampled the token),
region bitmask R_t (regions.py) and optimizer step s:

    raw_t  = scheme-specific, >= 0                       (paper: max over r in R_t of γ_r(s))
    w̃_t    = clip(raw_t, 0.001, 8)                       on P = {t : raw_t > 0 and m_t = 1}
    w_t    = w̃_t / mean_{t' in P} w̃_t'   for t in P,    w_t = 0 elsewhere      (per sequence)

so each sequence's positive weights average exactly 1. Paper-mode region weights (the authors' released
constants, all configurable): γ_format = 1.0, γ_name = 1.2, γ_args(s) = min(0.6 + 0.002·s, 1.2),
γ_reasoning(s) = min(0.6 + 0.002·s, 1.0), γ_answer = γ_other = 0.

Where we deviate from the paper and its code:
- **Entropy mode is our own derivation** (docs/design.md §4), not the paper's closed form, which was not
  available to us. For a softmax head E_{a~π}‖∇_z log π(a)‖² = 1 − Σ_a π(a)² =: v_t; minimising the
  variance of Σ_t w_t Â ∇log π under a fixed total weight gives w_t ∝ 1/v_t, tempered by a curriculum:
  raw_t = clip(((v̄ + ε)/(v_t + ε))^α(s), w_min, w_max), v̄ the sequence mean of v over masked tokens.
  We put ε in the numerator too, so a fully deterministic sequence (v ≡ 0) gets weight 1, not 0.
- **Region tags come from the generated token ids** (region_tagger.py), not from regexes over the
  re-tokenized response text as in the authors' `token_weighting.py`. A token touching several regions
  takes the largest of their weights (the authors' `maximum` over overlapping spans does the same).
  A token with no region bit set counts as OTHER.
- **Global denominator:** the weighted mean Σ m·w·L / Σ m·w runs over the whole optimizer step (all
  micro-batches and ranks, aggregation.py); the authors divide per micro-batch, which the
  `per-microbatch` aggregation reproduces.
- A sequence with no positive weight (e.g. a pure answer turn in paper mode) gets all-zero weights, as in
  the authors' code: it drops out of the weighted loss rather than falling back to uniform.

Step origin: every scheme evaluates its curricula at s = step + `step_origin` (default 0). Our loop
counts steps from 0; the authors' verl trainer calls the first RL step 1 (`global_steps` is incremented
before the first batch), so the paper recipes set `step_origin: 1` to get their γ at every step.

Every function here is a pure function of tensors and returns a **detached** [B, T] tensor: the weights
are a stop-gradient; no gradient flows into collision, entropy or anything else through them.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import torch

from rest_megatron.algo.curricula import Cosine, CurriculumSpec, Linear, evaluate
from rest_megatron.algo.regions import NUM_REGIONS, PRIMARY_PRIORITY, Region
from rest_megatron.algo.registry import Registry

# Clip range of positive raw weights before the per-sequence mean-1 rescaling (the authors' w_min/w_max).
CLIP_MIN = 0.001
CLIP_MAX = 8.0


class TokenWeightFn(Protocol):
    """fn(*, loss_mask, region_mask, step, collision=None, entropy=None, **params) -> detached [B, T]."""

    def __call__(
        self,
        *,
        loss_mask: torch.Tensor,
        region_mask: torch.Tensor,
        step: int,
        collision: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
        **params: object,
    ) -> torch.Tensor: ...


_TOKEN_WEIGHTS: Registry[TokenWeightFn] = Registry("token weights")
register_token_weights = _TOKEN_WEIGHTS.register
get_token_weights = _TOKEN_WEIGHTS.get
token_weight_names = _TOKEN_WEIGHTS.names


def _float_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    # float32 at least; float64 inputs (reference checks) keep float64.
    dtype = torch.float32
    for t in tensors:
        if t is not None and t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def region_bits(region_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] int bitmask -> [B, T, NUM_REGIONS] bool, True where the token touches region r."""
    shifts = torch.arange(NUM_REGIONS, device=region_mask.device)
    return ((region_mask.long().unsqueeze(-1) >> shifts) & 1).bool()


def primary_region(region_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] region id of the highest-priority set bit (`regions.PRIMARY_PRIORITY`); OTHER where none is."""
    bits = region_bits(region_mask)  # [B, T, R]
    score = torch.zeros(NUM_REGIONS, dtype=torch.long, device=region_mask.device)
    for rank, region in enumerate(PRIMARY_PRIORITY):
        score[int(region)] = NUM_REGIONS - rank  # higher score = higher priority, all >= 1
    scored = torch.where(bits, score, torch.zeros_like(score))  # [B, T, R]
    best = scored.argmax(dim=-1)  # [B, T]
    return torch.where(bits.any(dim=-1), best, torch.full_like(best, int(Region.OTHER)))


def region_max(region_mask: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """[B, T]: the largest gammas[r] over the regions set in each token's mask (gammas[OTHER] if none)."""
    bits = region_bits(region_mask)  # [B, T, R]
    neg_inf = torch.full_like(gammas, float("-inf"))
    best = torch.where(bits, gammas, neg_inf).amax(dim=-1)  # [B, T]
    return torch.where(bits.any(dim=-1), best, gammas[int(Region.OTHER)].expand_as(best))


def normalize_weights(
    raw: torch.Tensor, loss_mask: torch.Tensor, *, clip_min: float = CLIP_MIN, clip_max: float = CLIP_MAX
) -> torch.Tensor:
    """The common tail of every scheme: clip positive raw weights, rescale each row to mean 1, mask.

    Positions with raw <= 0 or m = 0 get 0; a row with no positive position is all zeros. Never NaN for
    finite or infinite raw values (+inf clips to clip_max; NaN raw counts as non-positive).
    """
    with torch.no_grad():
        raw = raw.detach()
        positive = (raw > 0) & (loss_mask != 0)  # [B, T]; NaN > 0 is False
        clipped = torch.where(positive, raw.clamp(clip_min, clip_max), torch.zeros_like(raw))
        count = positive.sum(dim=-1, keepdim=True)  # [B, 1]
        mean = clipped.sum(dim=-1, keepdim=True) / count.clamp_min(1)  # [B, 1], >= clip_min where count>0
        mean = torch.where(count > 0, mean, torch.ones_like(mean))
        return torch.where(positive, clipped / mean, torch.zeros_like(clipped))


def paper_raw(
    region_mask: torch.Tensor,
    step: int,
    *,
    gamma_format: CurriculumSpec,
    gamma_name: CurriculumSpec,
    gamma_args: CurriculumSpec,
    gamma_reasoning: CurriculumSpec,
    gamma_answer: CurriculumSpec,
    gamma_other: CurriculumSpec,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[B, T] region weights before clipping and normalization: max over the token's regions of γ_r(step)."""
    values = {
        Region.FORMAT_TAG: gamma_format,
        Region.TOOL_NAME: gamma_name,
        Region.TOOL_ARGS: gamma_args,
        Region.REASONING: gamma_reasoning,
        Region.ANSWER: gamma_answer,
        Region.OTHER: gamma_other,
    }
    gammas = torch.tensor(
        [evaluate(values[Region(r)], step) for r in range(NUM_REGIONS)],
        dtype=dtype,
        device=region_mask.device,
    )  # [R]
    return region_max(region_mask, gammas)


def entropy_raw(
    loss_mask: torch.Tensor,
    region_mask: torch.Tensor,
    step: int,
    *,
    collision: torch.Tensor | None,
    entropy: torch.Tensor | None,
    alpha: CurriculumSpec,
    w_min: float,
    w_max: float,
    eps: float,
    averaging: str,
    source: str,
) -> torch.Tensor:
    """[B, T] clip(((v̄ + ε)/(v_t + ε))^α(step), w_min, w_max) over masked tokens (0 elsewhere).

    v_t = 1 − collision_t (source="collision", the variance argument) or v_t = entropy_t (source="entropy",
    a cheaper monotone surrogate). averaging="region" replaces v_t by the mean of v over the masked tokens
    of the same primary region in the same sequence.
    """
    if source == "collision":
        if collision is None:
            raise ValueError("entropy weights with source='collision' need `collision` (Σπ², [B, T])")
        dtype = _float_dtype(collision)
        v = 1.0 - collision.detach().to(dtype)
    elif source == "entropy":
        if entropy is None:
            raise ValueError("entropy weights with source='entropy' need `entropy` (H, [B, T])")
        dtype = _float_dtype(entropy)
        v = entropy.detach().to(dtype)
    else:
        raise ValueError(f"unknown entropy-weight source {source!r}; use 'collision' or 'entropy'")
    mask = loss_mask != 0  # [B, T]
    # Padding may hold garbage; rounding may push 1 − Σπ² a hair below 0. Neither may reach the power.
    v = torch.where(mask & torch.isfinite(v), v, torch.zeros_like(v)).clamp_min(0.0)
    count = mask.sum(dim=-1, keepdim=True).clamp_min(1)  # [B, 1]
    v_bar = v.sum(dim=-1, keepdim=True) / count  # [B, 1]
    if averaging == "region":
        primary = primary_region(region_mask)  # [B, T]
        onehot = torch.nn.functional.one_hot(primary, NUM_REGIONS).to(dtype) * mask.unsqueeze(-1)  # [B, T, R]
        region_sum = (onehot * v.unsqueeze(-1)).sum(dim=1)  # [B, R]
        region_count = onehot.sum(dim=1).clamp_min(1)  # [B, R]
        v = torch.gather(region_sum / region_count, 1, primary)  # [B, T]
    elif averaging != "token":
        raise ValueError(f"unknown entropy-weight averaging {averaging!r}; use 'token' or 'region'")
    ratio = (v_bar + eps) / (v + eps)  # [B, T], > 0
    raw = ratio.pow(evaluate(alpha, step)).clamp(w_min, w_max)  # +inf from overflow clips to w_max
    return torch.where(mask, raw, torch.zeros_like(raw))


# Defaults of the paper's schedules, shared by `paper` and `hybrid`.
PAPER_GAMMA_ARGS = Linear(start=0.6, slope=0.002, cap=1.2)
PAPER_GAMMA_REASONING = Linear(start=0.6, slope=0.002, cap=1.0)
# α decays from 1 (exactly the variance-optimal w ∝ 1/v) to 0 (uniform) over the ~300 steps in which the
# paper's γ_args reaches its cap. Our choice, not the paper's.
ENTROPY_ALPHA = Cosine(start=1.0, end=0.0, num_steps=300)


@register_token_weights("paper")
def paper_weights(
    *,
    loss_mask: torch.Tensor,
    region_mask: torch.Tensor,
    step: int,
    collision: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    gamma_format: CurriculumSpec = 1.0,
    gamma_name: CurriculumSpec = 1.2,
    gamma_args: CurriculumSpec = PAPER_GAMMA_ARGS,
    gamma_reasoning: CurriculumSpec = PAPER_GAMMA_REASONING,
    gamma_answer: CurriculumSpec = 0.0,
    gamma_other: CurriculumSpec = 0.0,
    clip_min: float = CLIP_MIN,
    clip_max: float = CLIP_MAX,
    step_origin: int = 0,
) -> torch.Tensor:
    """ResT paper mode: region γ(step), clipped and rescaled per sequence. collision/entropy are unused."""
    step = step + step_origin
    raw = paper_raw(
        region_mask,
        step,
        gamma_format=gamma_format,
        gamma_name=gamma_name,
        gamma_args=gamma_args,
        gamma_reasoning=gamma_reasoning,
        gamma_answer=gamma_answer,
        gamma_other=gamma_other,
    )
    return normalize_weights(raw, loss_mask, clip_min=clip_min, clip_max=clip_max)


@register_token_weights("entropy")
def entropy_weights(
    *,
    loss_mask: torch.Tensor,
    region_mask: torch.Tensor,
    step: int,
    collision: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    alpha: CurriculumSpec = ENTROPY_ALPHA,
    w_min: float = 0.2,
    w_max: float = 5.0,
    eps: float = 1e-6,
    averaging: str = "token",
    source: str = "collision",
    clip_min: float = CLIP_MIN,
    clip_max: float = CLIP_MAX,
    step_origin: int = 0,
) -> torch.Tensor:
    """Entropy mode (our derivation, see the module docstring): w ∝ ((v̄+ε)/(v+ε))^α(step), normalized."""
    step = step + step_origin
    raw = entropy_raw(
        loss_mask,
        region_mask,
        step,
        collision=collision,
        entropy=entropy,
        alpha=alpha,
        w_min=w_min,
        w_max=w_max,
        eps=eps,
        averaging=averaging,
        source=source,
    )
    return normalize_weights(raw, loss_mask, clip_min=clip_min, clip_max=clip_max)


def _tuning_parameters(scheme: TokenWeightFn) -> dict[str, inspect.Parameter]:
    """A registered scheme's own keyword parameters with their defaults: its signature past the inputs
    every scheme receives and the shared clip range."""
    shared = {
        "loss_mask",
        "region_mask",
        "step",
        "collision",
        "entropy",
        "clip_min",
        "clip_max",
        "step_origin",
    }
    return {name: p for name, p in inspect.signature(scheme).parameters.items() if name not in shared}


# `hybrid` takes every tuning parameter of `paper` and `entropy`, declared once, in those two functions.
_PAPER_PARAMETERS = _tuning_parameters(paper_weights)
_ENTROPY_PARAMETERS = _tuning_parameters(entropy_weights)
if set(_PAPER_PARAMETERS) & set(_ENTROPY_PARAMETERS):
    raise TypeError(
        f"hybrid cannot tell whose parameter {set(_PAPER_PARAMETERS) & set(_ENTROPY_PARAMETERS)} is"
    )


@register_token_weights("hybrid")
def hybrid_weights(
    *,
    loss_mask: torch.Tensor,
    region_mask: torch.Tensor,
    step: int,
    collision: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_min: float = CLIP_MIN,
    clip_max: float = CLIP_MAX,
    step_origin: int = 0,
    **params: Any,
) -> torch.Tensor:
    """Paper raw weight × entropy raw weight, then clipped and rescaled once (not each factor).

    `params` are the tuning parameters of `paper_weights` and `entropy_weights`, with their defaults;
    the signature (`inspect.signature`, which config validation reads) lists them by name.
    """
    unknown = sorted(set(params) - set(_PAPER_PARAMETERS) - set(_ENTROPY_PARAMETERS))
    if unknown:
        raise TypeError(
            f"hybrid_weights() got unexpected keyword arguments {unknown}; it takes "
            f"{', '.join([*_PAPER_PARAMETERS, *_ENTROPY_PARAMETERS])}"
        )

    step = step + step_origin

    def chosen(parameters: dict[str, inspect.Parameter]) -> dict[str, Any]:
        return {name: params.get(name, p.default) for name, p in parameters.items()}

    entropy_part = entropy_raw(
        loss_mask, region_mask, step, collision=collision, entropy=entropy, **chosen(_ENTROPY_PARAMETERS)
    )
    region_part = paper_raw(region_mask, step, **chosen(_PAPER_PARAMETERS), dtype=entropy_part.dtype)
    return normalize_weights(region_part * entropy_part, loss_mask, clip_min=clip_min, clip_max=clip_max)


_HYBRID_OWN = [
    p for p in inspect.signature(hybrid_weights).parameters.values() if p.kind is not p.VAR_KEYWORD
]
hybrid_weights.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [*_HYBRID_OWN, *_PAPER_PARAMETERS.values(), *_ENTROPY_PARAMETERS.values()]
)


@register_token_weights("uniform")
def uniform_weights(
    *,
    loss_mask: torch.Tensor,
    region_mask: torch.Tensor,
    step: int,
    collision: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    step_origin: int = 0,
) -> torch.Tensor:
    """Plain GRPO: w = m (as float). Every masked token weighs 1, which is already mean 1 per sequence.

    Nothing here moves with the step; `step_origin` is taken (and has no effect) because every scheme
    takes it, so a GRPO baseline recipe can inherit a ResT recipe's `weights_params: {step_origin: 1}`."""
    return (loss_mask != 0).to(torch.float32)
