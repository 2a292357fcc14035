"""Loss aggregation: per-token losses -> one optimizer update's scalar loss (docs/design.md §6).

"Step" below means one optimizer update: a training step with `optimizer.mini_batch_size` smaller than
its rollout batch makes several updates, each with its own denominator over its own mini-batch.

An aggregation has two halves:

- `denominator(loss_mask=, weights=)` gives this micro-batch's share of the step denominator. The trainer
  sums it over every micro-batch of the step on its rank, all-reduces (SUM) that once over the data-parallel
  group **before** the micro-batch loop, and passes the result to every call as `global_denominator`.
- `agg(loss, loss_mask=, weights=, global_denominator=)` gives this micro-batch's *contribution*. The step
  loss is the SUM of the contributions over all micro-batches and all data-parallel ranks, so gradients
  must be summed, not averaged, across DP ranks (with Megatron DDP, which averages, scale by the DP size).

With a global denominator the gradient does not depend on how the step is split into micro-batches or
ranks (`split_invariant=True`). `per-microbatch` reproduces the authors' code, which is not.

Weights are a stop-gradient (detached here); positions with loss_mask 0 contribute nothing even if their
loss is NaN (they are selected away with torch.where, not multiplied by 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rest_megatron.algo.registry import Registry

DenominatorFn = Callable[..., torch.Tensor]
AggregateFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Aggregation:
    """A registered aggregation: its local denominator, its contribution and whether it is split-invariant."""

    name: str
    denominator: DenominatorFn
    aggregate: AggregateFn
    split_invariant: bool

    def __call__(
        self,
        loss: torch.Tensor,
        *,
        loss_mask: torch.Tensor,
        weights: torch.Tensor,
        global_denominator: torch.Tensor | float,
    ) -> torch.Tensor:
        return self.aggregate(
            loss, loss_mask=loss_mask, weights=weights, global_denominator=global_denominator
        )


_AGGREGATIONS: Registry[Aggregation] = Registry("aggregation")
get_aggregation = _AGGREGATIONS.get
aggregation_names = _AGGREGATIONS.names


def register_aggregation(
    name: str, *, denominator: DenominatorFn, split_invariant: bool = True
) -> Callable[[AggregateFn], AggregateFn]:
    """Decorator: register `fn(loss, *, loss_mask, weights, global_denominator) -> scalar` under `name`."""

    def decorator(fn: AggregateFn) -> AggregateFn:
        _AGGREGATIONS.register(name)(Aggregation(name, denominator, fn, split_invariant))
        return fn

    return decorator


def _masked(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(loss_mask != 0, values, torch.zeros_like(values))


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor | float) -> torch.Tensor:
    # A step with nothing to train on has numerator 0 and denominator 0: give 0, not NaN, and keep the
    # backward free of 0 · inf.
    den = torch.as_tensor(denominator, dtype=numerator.dtype, device=numerator.device)
    return numerator / torch.where(den != 0, den, torch.ones_like(den))


def weighted_denominator(loss_mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Local Σ m·w over this micro-batch (scalar). SUM it over the step and the DP group, once per step."""
    return _masked(weights.detach().to(torch.promote_types(weights.dtype, torch.float32)), loss_mask).sum()


def token_count(loss_mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Local Σ m (scalar float)."""
    return (loss_mask != 0).sum().to(torch.float32)


def weighted_sequence_count(loss_mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Local number of sequences with Σ_t m·w > 0 (scalar float)."""
    per_seq = _masked(weights.detach(), loss_mask).sum(dim=-1)  # [B]
    return (per_seq > 0).sum().to(torch.float32)


def row_count(loss_mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Local number of rows B, padding rows included, as the authors count (scalar float)."""
    return torch.tensor(float(loss_mask.shape[0]), device=loss_mask.device)


@register_aggregation("token-mean-weighted", denominator=weighted_denominator)
def token_mean_weighted(
    loss: torch.Tensor,
    *,
    loss_mask: torch.Tensor,
    weights: torch.Tensor,
    global_denominator: torch.Tensor | float,
) -> torch.Tensor:
    """ResT's weighted token mean: Σ m·w·L / D, D = Σ m·w over the whole optimizer step."""
    return _safe_divide(_masked(weights.detach() * loss, loss_mask).sum(), global_denominator)


@register_aggregation("token-mean", denominator=token_count)
def token_mean(
    loss: torch.Tensor,
    *,
    loss_mask: torch.Tensor,
    weights: torch.Tensor,
    global_denominator: torch.Tensor | float,
) -> torch.Tensor:
    """Unweighted token mean: Σ m·L / N, N = number of masked tokens in the step. Weights are ignored."""
    return _safe_divide(_masked(loss, loss_mask).sum(), global_denominator)


@register_aggregation("seq-mean-token-mean", denominator=weighted_sequence_count)
def seq_mean_token_mean(
    loss: torch.Tensor,
    *,
    loss_mask: torch.Tensor,
    weights: torch.Tensor,
    global_denominator: torch.Tensor | float,
) -> torch.Tensor:
    """Σ_b [Σ_t m·w·L / Σ_t m·w] / S, S = number of sequences in the step with Σ_t m·w > 0.

    Each sequence's weighted token mean counts once; with uniform weights (w = m) this is the usual
    seq-mean-token-mean. (The authors' variant divides Σ m·w·L by Σ m instead; with their mean-1 weights
    the two differ only on sequences that have zero-weight tokens.)
    """
    w = _masked(weights.detach(), loss_mask)  # [B, T]
    per_seq_den = w.sum(dim=-1)  # [B]
    per_seq = _masked(w * loss, loss_mask).sum(dim=-1) / torch.where(
        per_seq_den > 0, per_seq_den, torch.ones_like(per_seq_den)
    )  # [B]
    return _safe_divide(per_seq.sum(), global_denominator)


@register_aggregation("per-microbatch", denominator=row_count, split_invariant=False)
def per_microbatch(
    loss: torch.Tensor,
    *,
    loss_mask: torch.Tensor,
    weights: torch.Tensor,
    global_denominator: torch.Tensor | float,
) -> torch.Tensor:
    """The authors' code exactly: a weighted mean per micro-batch, scaled by its share of the rows.

    In ResT's verl fork (`agg_loss` mode `token-mean-weighted` -> `weighted_masked_mean`, and
    `dp_actor.update_policy`) each micro-batch k on DP rank r contributes
        loss_k = Σ_k m·w·L / (Σ_k m·w + 1e-8)   scaled by   B_k / B_r
    (loss_scale_factor = 1/gradient_accumulation = B_k / ppo_mini_batch_size, or B_k / B_r with dynamic
    batch size), gradients are summed over micro-batches and averaged over the DP ranks (FSDP):
        grad = (1/DP) Σ_r Σ_k (B_k / B_r) ∇loss_k.
    With equal rows per rank (B_r = N/DP, as verl splits) this is Σ_r Σ_k (B_k / N) ∇loss_k, N the step's
    rows, which is what this contribution B_k · loss_k / N gives with global_denominator = N (row_count).
    Tokens in a micro-batch with few weighted tokens count more than in one with many, so the gradient
    changes with the micro-batch size.
    """
    w = _masked(weights.detach(), loss_mask)
    local = _masked(w * loss, loss_mask).sum() / (w.sum() + 1e-8)
    return _safe_divide(local * loss_mask.shape[0], global_denominator)
