"""Float64 full-vocabulary reference for the token statistics, and input generators shared by the
single-process tests and the gloo tests of the vocab-parallel ops."""

from __future__ import annotations

import random

import torch
from torch import Tensor

IGNORE = -100


def fresh_seed() -> int:
    """A new seed every run (fresh inputs); tests put it in their failure messages to replay."""
    return random.SystemRandom().randrange(2**31)


def reference_stats(logits: Tensor, targets: Tensor, vocab_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """log π(y), H, Σπ² in float64 over the first `vocab_size` columns of the full logits [T, V_pad]."""
    z = logits[:, :vocab_size].double()
    log_p = z.log_softmax(dim=-1)
    ignored = targets == IGNORE
    logprob = log_p.gather(1, targets.masked_fill(ignored, 0).unsqueeze(-1)).squeeze(-1)
    logprob = torch.where(ignored, torch.zeros_like(logprob), logprob)
    p = log_p.exp()
    return logprob, -(p * log_p).sum(-1), (p * p).sum(-1)


def fused_op_logits(hidden: Tensor, weight: Tensor, chunk: int, vocab_size: int, tp: int = 1) -> Tensor:
    """[T, vocab_size] float32 logits computed as `fused_output_token_stats` computes them: `chunk` rows
    at a time against each TP shard's real vocabulary rows. Same shapes, same float32 rounding: a
    whole-matrix h·Wᵀ rounds differently (a chunk of one row is a matrix-vector product), which alone
    moved Σπ² by 1.01e-6 on one seed."""
    shard = weight.shape[0] // tp
    columns = []
    for k in range(tp):
        w = weight[k * shard : k * shard + max(0, min(shard, vocab_size - k * shard))]
        columns.append(torch.cat([hidden[r : r + chunk] @ w.t() for r in range(0, hidden.shape[0], chunk)]))
    return torch.cat(columns, dim=1)


# Normwise relative tolerances for float32 inputs: the 1e-6 for every statistic. Measured worst
# with the two-level row sums: Σπ² 3.8e-7, H 7e-8 over 40 random [256, 32k-152k] batches.
VALUE_RTOL = {"logprob": 1e-6, "entropy": 1e-6, "collision": 1e-6}
# The fused op starts one step earlier, from h and W: its float32 logits carry the matmul's rounding
# (~sqrt(hidden) ulp each) that an all-float64 reference (h·Wᵀ in float64) does not; that alone reached
# 1.44e-6 on Σπ² over 150 seeds. So the fused tests hold the op's values to 1e-6 of the float64
# statistics of its own float32 logits (`fused_op_logits`; worst 6.0e-7 over 300 seeds × 4 chunk sizes,
# where whole-matrix logits reached 1.41e-6) and to 2e-6 of the all-float64 reference.
FUSED_VALUE_RTOL = {name: 2 * tol for name, tol in VALUE_RTOL.items()}
GRAD_RTOL = 1e-5


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """Normwise relative error max|a − e| / max|e|."""
    scale = expected.detach().double().abs().max().clamp_min(1e-30)
    return ((actual.detach().double() - expected.detach().double()).abs().max() / scale).item()


def make_logits(gen: torch.Generator, T: int, V: int, extreme: bool = False) -> Tensor:
    """[T, V] float32 logits; `extreme` plants ±1e4 entries, an all-1e4 row and an all-(−1e4) row."""
    z = torch.randn(T, V, generator=gen) * 4
    if extreme:
        u = torch.rand(T, V, generator=gen)
        z[u < 0.01] = 1e4
        z[u > 0.99] = -1e4
        z[0] = 1e4
        z[1] = -1e4
    return z


def make_targets(gen: torch.Generator, T: int, vocab_size: int, boundaries: list[int] = ()) -> Tensor:
    """[T] ids in [0, vocab_size) with ~10% ignore_index, plus every id in `boundaries` (shard edges)."""
    y = torch.randint(0, vocab_size, (T,), generator=gen)
    y[torch.rand(T, generator=gen) < 0.1] = IGNORE
    edges = [b for b in boundaries if 0 <= b < vocab_size]
    assert T >= len(edges) + 2, "too few tokens for the boundary targets"
    y[2 : 2 + len(edges)] = torch.tensor(edges, dtype=y.dtype)
    return y


def shard_edges(shard: int, tp: int, vocab_size: int) -> list[int]:
    """The first and last id of every shard, and the last real id."""
    ids = {vocab_size - 1, 0}
    for r in range(tp):
        ids |= {r * shard, r * shard + shard - 1}
    return sorted(i for i in ids if i < vocab_size)
