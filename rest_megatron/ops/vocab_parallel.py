"""Per-token log π(y), entropy H and collision probability Σπ² from a vocab-parallel logits shard.

Rank k of the tensor-parallel (TP) group holds z^k, its V/TP columns of the logits. For every token
(docs/design.md §5), with M the global max over the vocabulary and u = z − M:

    S = Σ_j e^{u_j}          A = Σ_j e^{u_j} u_j          Q = Σ_j e^{2 u_j}
    log Z    = M + log S
    log π(y) = u_y − log S
    H        = log S − A / S                     (= log Z − Σ_j π_j z_j)
    Σπ²      = Q / S²

Backward with respect to the local z_j (no communication needed):

    d log π(y) / dz_j = 1[j = y] − π_j
    d H / dz_j        = −π_j (log π_j + H)

Exactly two collectives per forward call: one all-reduce MAX of the local maxima [T] and one
all-reduce SUM of the packed local sums [4, T] = [S, A, Q, u_y if y is local else 0].

Two deviations from the literal §5 recipe, both exact in real arithmetic:
- The third sum uses u = z − M instead of z. With |z| ~ 1e4, Σ e^{z−M} z / S and log Z are both ~1e4
  and their difference H loses ~1e-3 to float32 cancellation; with u the terms are small.
- Each rank first sums relative to its *local* max m_k and rescales by s = e^{m_k − M} once M is known
  (S ← s S_k, A ← s (A_k + (m_k − M) S_k), Q ← s² Q_k, u_y ← u_y,k + m_k − M). The max all-reduce can
  therefore come after one single pass over the logits, which is what lets the fused op
  (`fused_output.py`) compute each logits chunk exactly once in forward.

Accumulation is float32 whatever the logits dtype. Each row sum is two-level: float32 `.sum()`s over
runs of `_SUM_RUN` columns, then a float64 sum of those partials (§5: a compiled sum or einsum was
measurably less accurate). One float32 `.sum()` over a 76k-column row is off by up to ~5e-7 relative,
and Σπ² = Q/S² compounds three such sums to ~1.1e-6; the two-level sum keeps it near 4e-7 (the float64
reference) for ~8% more time. The per-token sums stay float64 through the all-reduce ([4, T], tiny) and
the final divisions. Rows are processed in small blocks so the float32 temporaries stay in cache;
block size changes speed, never the result's definition.

Conventions shared with `fused_output_token_stats`:
- Targets are global vocabulary ids in [0, vocab_size), or `ignore_index` (log π = 0 there and no
  gradient flows from it; H and Σπ² do not depend on the target and are computed for every token).
- Vocab padding: Megatron pads the vocabulary to a multiple of TP (and of
  `make_vocab_size_divisible_by`); columns with a global id >= `vocab_size` are left out of every sum,
  which is the same as masking them to −inf, and get zero gradient.
- `tp_group=None` (or a group of one rank) means no tensor parallelism: the shard is the whole
  (padded) vocabulary and no collective runs.
- Logits must be finite (Megatron's output layer never produces ±inf).
- Outputs are float32 of shape `targets.shape`. log π is differentiable; H only with
  `entropy_grad=True` (for an entropy bonus); Σπ² is always detached (it feeds stop-gradient weights).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

# Rows per block of float32 temporaries. CPU: ~1 MiB blocks; measured, blocks of 1-32 rows of a
# 76k-column shard run ~5x faster than one pass over 1024 rows because the temporaries stay in cache.
# Accelerators: 64 MiB blocks, few enough kernel launches, while the temporaries stay far below [T, V/tp].
_BLOCK_ELEMENTS = {"cpu": 1 << 18}
_BLOCK_ELEMENTS_ACCELERATOR = 1 << 24
# Columns per float32 partial sum; the partials are added in float64. 32-512 all measured alike.
_SUM_RUN = 128


class TokenStats(NamedTuple):
    """Per-token statistics, float32, shaped like the targets."""

    logprob: Tensor  # log π(y); 0 at ignore_index positions
    entropy: Tensor  # H = −Σ π log π
    collision: Tensor  # Σ π², always detached


class ShardGeometry(NamedTuple):
    """Where this rank's vocabulary shard sits in the global (padded) vocabulary."""

    tp_size: int
    vocab_start: int  # global id of local column 0
    num_valid: int  # local columns whose global id < vocab_size; the rest are padding


def shard_geometry(
    shard_vocab: int, tp_group: dist.ProcessGroup | None, vocab_size: int | None
) -> ShardGeometry:
    """Megatron's even split: rank r of the TP group owns global ids [r·V/TP, (r+1)·V/TP)."""
    tp_size = 1 if tp_group is None else dist.get_world_size(tp_group)
    tp_rank = 0 if tp_group is None else dist.get_rank(tp_group)
    padded = shard_vocab * tp_size
    if vocab_size is None:
        vocab_size = padded
    if not 0 < vocab_size <= padded:
        raise ValueError(
            f"vocab_size={vocab_size} must be in (0, {padded}] (the padded vocabulary: "
            f"{shard_vocab} columns per rank x TP={tp_size}); pass the tokenizer's true vocabulary size"
        )
    vocab_start = tp_rank * shard_vocab
    return ShardGeometry(tp_size, vocab_start, max(0, min(shard_vocab, vocab_size - vocab_start)))


def check_targets(targets: Tensor, vocab_size: int, ignore_index: int) -> None:
    """Reject target ids outside [0, vocab_size): they would silently read as 'not on any shard'."""
    bad = ((targets < 0) | (targets >= vocab_size)) & (targets != ignore_index)
    if targets.device.type == "cpu":
        if bool(bad.any()):
            raise ValueError(
                f"targets must be in [0, {vocab_size}) or ignore_index={ignore_index}; "
                f"got {targets[bad][:5].tolist()}"
            )
    else:  # no host sync on accelerators
        torch._assert_async(~bad.any(), f"targets must be in [0, {vocab_size}) or ignore_index")


def local_targets(targets: Tensor, geom: ShardGeometry, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Local column of each target (0 where not local) and whether it is on this shard. [T], [T]."""
    local = targets - geom.vocab_start
    is_local = (local >= 0) & (local < geom.num_valid) & (targets != ignore_index)
    return torch.where(is_local, local, torch.zeros_like(local)), is_local


def block_rows(num_cols: int, device: torch.device) -> int:
    """Rows per block of float32 temporaries for a shard of `num_cols` columns on `device`."""
    elements = _BLOCK_ELEMENTS.get(device.type, _BLOCK_ELEMENTS_ACCELERATOR)
    return max(1, elements // max(num_cols, 1))


def row_sums(x: Tensor, out: Tensor) -> None:
    """out[i] = Σ_j x[i, j] for a contiguous [b, n] float32 block, into a float64 `out` [b].

    Float32 partial sums over runs of `_SUM_RUN` columns, added up in float64: as fast as one float32
    reduction to within a few microseconds per row, and an order of magnitude less rounding.
    """
    n = x.shape[1]
    full = n - n % _SUM_RUN
    partials = x[:, :full].view(x.shape[0], full // _SUM_RUN, _SUM_RUN).sum(-1)  # [b, n/run] float32
    torch.sum(partials, dim=-1, dtype=torch.float64, out=out)
    if full < n:
        out.add_(x[:, full:].sum(-1, dtype=torch.float64))


def accumulate_local_stats(
    z: Tensor, idx: Tensor, is_local: Tensor, m_out: Tensor, packed_out: Tensor, rows: int
) -> None:
    """Fill m_out [t] (float32) and packed_out [4, t] (float64) = [S, A, Q, u_y] relative to each
    row's *local* max.

    z: [t, n] valid local logits (any float dtype); idx, is_local: [t]. Processes `rows` rows at a time;
    per-row scalars go straight into the outputs (out=).
    """
    if z.shape[1] == 0:  # a shard made only of vocab padding contributes nothing
        m_out.fill_(float("-inf"))
        packed_out.zero_()
        return
    S, A, Q, u_y = packed_out.unbind(0)  # [t] each, contiguous
    for r0 in range(0, z.shape[0], rows):
        b = slice(r0, r0 + rows)
        zf = z[b].float()  # [b, n]; no copy for float32 input
        m = torch.amax(zf, dim=-1, out=m_out[b])  # [b]
        u = zf - m.unsqueeze(-1)  # [b, n]
        e = u.exp()  # [b, n]
        row_sums(e, S[b])
        row_sums(u.mul_(e), A[b])  # in place: u is not needed afterwards
        row_sums(e.mul_(e), Q[b])
    z_y = z.gather(1, idx.unsqueeze(-1)).squeeze(-1).float()  # [t]
    u_y.copy_(torch.where(is_local, z_y.double() - m_out.double(), 0.0))


def _all_reduce(tensor: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> None:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)


def combine_across_shards(
    m_local: Tensor,
    packed: Tensor,
    is_local: Tensor,
    targets: Tensor,
    ignore_index: int,
    group: dist.ProcessGroup | None,
    has_columns: bool,
) -> tuple[TokenStats, Tensor, Tensor]:
    """The two collectives: max, rescale to the global max, packed sum.

    `packed` is float64; the returned tensors are float32. Returns the stats and the two halves of
    log Z = M + log S, each [T]: the backward needs log π_j = (z_j − M) − log S, and forming M + log S
    first would cost ~1e-3 absolute at |z| ~ 1e4.
    """
    M = m_local.clone()  # [T]
    _all_reduce(M, dist.ReduceOp.MAX, group)  # collective 1 of 2
    if has_columns:
        delta = (m_local - M).double()  # [T], <= 0
        s = delta.exp()
        S, A, Q, u_y = packed.unbind(0)
        packed = torch.stack(
            [s * S, s * (A + delta * S), s * s * Q, torch.where(is_local, u_y + delta, u_y)], dim=0
        )  # [4, T]
    # else: an all-padding shard; its sums are zero and stay zero (rescaling m_local = -inf gives NaN).
    _all_reduce(packed, dist.ReduceOp.SUM, group)  # collective 2 of 2
    S, A, Q, u_y = packed.unbind(0)
    log_s = S.log()
    logprob = torch.where(targets == ignore_index, torch.zeros_like(u_y), u_y - log_s).float()
    entropy = (log_s - A / S).float()
    collision = (Q / (S * S)).float()
    return TokenStats(logprob, entropy, collision), M, log_s.float()


def local_logits_grad(
    z: Tensor,
    max_z: Tensor,
    log_s: Tensor,
    g_lp: Tensor,
    g_h: Tensor | None,
    entropy: Tensor | None,
    idx: Tensor,
    is_local: Tensor,
) -> Tensor:
    """d(Σ g_lp·log π(y) + Σ g_h·H)/dz for one block of rows, float32 [b, n].

    = −π_j (g_lp + g_h (log π_j + H)) + g_lp·1[j = y]; g_lp must already be 0 at ignore_index rows.
    """
    log_p = (z.float() - max_z.unsqueeze(-1)).sub_(log_s.unsqueeze(-1))  # [b, n]
    p = log_p.exp()  # [b, n]
    if g_h is None:
        grad = p.mul_(g_lp.unsqueeze(-1)).neg_()
    else:
        coef = log_p.add_(entropy.unsqueeze(-1)).mul_(g_h.unsqueeze(-1)).add_(g_lp.unsqueeze(-1))
        grad = p.mul_(coef).neg_()
    hit = torch.where(is_local, g_lp, torch.zeros_like(g_lp))
    return grad.scatter_add_(1, idx.unsqueeze(-1), hit.unsqueeze(-1))


def output_grads(
    ctx: torch.autograd.function.FunctionCtx, g_lp: Tensor | None, g_h: Tensor | None, targets: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The upstream grads in float32, with log π's grad zeroed where the output was the constant 0."""
    if g_lp is None:
        g_lp = torch.zeros_like(targets, dtype=torch.float32)
    g_lp = torch.where(targets == ctx.ignore_index, torch.zeros_like(g_lp), g_lp.float())
    if not ctx.entropy_grad or g_h is None:
        return g_lp, None
    return g_lp, g_h.float()


class _ShardTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, group, geom, ignore_index, entropy_grad, rows):
        T = logits.shape[0]
        idx, is_local = local_targets(targets, geom, ignore_index)  # [T], [T]
        m_local = logits.new_empty(T, dtype=torch.float32)
        packed = logits.new_empty(4, T, dtype=torch.float64)
        accumulate_local_stats(logits[:, : geom.num_valid], idx, is_local, m_local, packed, rows)
        stats, max_z, log_s = combine_across_shards(
            m_local, packed, is_local, targets, ignore_index, group, geom.num_valid > 0
        )
        ctx.save_for_backward(logits, targets, max_z, log_s, stats.entropy)
        ctx.geom, ctx.ignore_index, ctx.entropy_grad, ctx.rows = geom, ignore_index, entropy_grad, rows
        # One call: each call replaces the previous set of non-differentiable outputs.
        ctx.mark_non_differentiable(
            *([stats.collision] if entropy_grad else [stats.collision, stats.entropy])
        )
        return stats.logprob, stats.entropy, stats.collision

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp, g_h, _g_collision):
        logits, targets, max_z, log_s, entropy = ctx.saved_tensors
        g_lp, g_h = output_grads(ctx, g_lp, g_h, targets)
        idx, is_local = local_targets(targets, ctx.geom, ctx.ignore_index)
        n = ctx.geom.num_valid
        grad = torch.empty_like(logits)  # [T, V/tp]
        grad[:, n:] = 0  # vocab padding
        for r0 in range(0, logits.shape[0] if n > 0 else 0, ctx.rows):  # n = 0: an all-padding shard
            r = slice(r0, r0 + ctx.rows)
            grad[r, :n] = local_logits_grad(
                logits[r, :n],
                max_z[r],
                log_s[r],
                g_lp[r],
                None if g_h is None else g_h[r],
                entropy[r],
                idx[r],
                is_local[r],
            )
        return grad, None, None, None, None, None, None


def vocab_parallel_token_stats(
    logits_shard: Tensor,
    targets: Tensor,
    tp_group: dist.ProcessGroup | None,
    *,
    vocab_size: int | None = None,
    ignore_index: int = -100,
    entropy_grad: bool = False,
    chunk_size: int | None = None,
) -> TokenStats:
    """log π(y), H and Σπ² per token from this rank's slice of the logits, without gathering them.

    Args:
        logits_shard: [..., V_padded/TP], any float dtype (accumulation is float32). Megatron's
            output layer gives [S, B, V/TP]; pass it with `targets` = labels.t() of shape [S, B].
        targets: [...] global token ids (int64), same leading shape as the logits.
        tp_group: the tensor-parallel group the vocabulary is split over; None for no TP.
        vocab_size: the true vocabulary size; columns at or beyond it are padding (masked to −inf).
            None means no padding.
        ignore_index: targets equal to it get log π = 0 and no gradient.
        entropy_grad: make H differentiable (entropy bonus); otherwise it is detached.
        chunk_size: rows per block of float32 temporaries; None picks ~1 MiB blocks on CPU and
            64 MiB on GPU. Speed and temporary memory only, never the result.

    Returns:
        TokenStats of float32 tensors shaped like `targets`.
    """
    if logits_shard.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits_shard.shape)} and targets {tuple(targets.shape)} disagree")
    geom = shard_geometry(logits_shard.shape[-1], tp_group, vocab_size)
    check_targets(targets, vocab_size or logits_shard.shape[-1] * geom.tp_size, ignore_index)
    rows = block_rows(geom.num_valid, logits_shard.device) if chunk_size is None else chunk_size
    if rows < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    logprob, entropy, collision = _ShardTokenStats.apply(
        logits_shard.reshape(-1, logits_shard.shape[-1]),
        targets.reshape(-1).long(),
        tp_group,
        geom,
        ignore_index,
        entropy_grad,
        rows,
    )
    shape = targets.shape
    return TokenStats(logprob.view(shape), entropy.view(shape), collision.view(shape))
