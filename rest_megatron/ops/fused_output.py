"""The output layer fused with the vocab-parallel token statistics: logits are never materialized.

`fused_output_token_stats(hidden, W_k, targets, tp_group, chunk_size)` replaces Megatron's output layer
(a ColumnParallelLinear over the vocabulary, weight W_k of shape [V_padded/TP, H], no bias) *and* the
log-prob / entropy / Σπ² computation of `vocab_parallel.py` (same formulas, same conventions). It works
on C rows at a time:

    forward:  z_c = h_c W_kᵀ  [C, V/TP]  →  local max and local sums [C], [4, C]  (z_c is dropped)
              then the same two collectives as `vocab_parallel_token_stats` (max, packed sum)
    backward: z_c = h_c W_kᵀ  (recomputed)  →  g_c = dL/dz_c, written over z_c in place
              grad_h_c = g_c W_k,   grad_W_k += g_cᵀ h_c

Nothing of size [T, V/TP] exists at any time: the largest temporaries are one [C, V/TP] chunk in the
compute dtype plus a float32 block (~1 MiB on CPU, 64 MiB on GPU). Forward keeps only h, W_k
(references to tensors the caller holds anyway), the targets and M, log S, H: [T] float32 each.

Collectives: forward 2 (all-reduce MAX [T], all-reduce SUM [4, T]); backward 1, an all-reduce of
grad_h [T, H] after the chunk loop. One all-reduce after the loop rather than one per chunk: the same
bytes in one message instead of T/C latency-bound ones, and no ordering constraint between the chunk
loop and the network; per-chunk all-reduces would only pay off with asynchronous overlap. grad_W_k
needs no communication (each rank owns its rows). The TP partial sums of grad_h are what Megatron's
ColumnParallelLinear all-reduces in its own backward (copy_to_tensor_model_parallel_region), so the
caller must pass the hidden states directly, not through another TP-region copy.

Sequence parallelism (`sequence_parallel=True`): `hidden` is this rank's sequence shard; it is
all-gathered along dim 0 first (one more collective in forward) and gathered again in backward instead
of being saved gathered (Megatron's choice too: activation memory stays at the shard), and grad_h is
reduce-scattered back to the shard instead of all-reduced.

How the caller flattens (Megatron is sequence-first): hidden [S, B, H] (or [S/TP, B, H] with sequence
parallelism) and targets = labels.t() of shape [S, B]; the outputs come back [S, B], so
`stats.logprob.t()` is [B, S]. Any leading shape works as long as the flattened hidden rows line up with
the flattened targets; with sequence parallelism the rank-major gather of [S/TP·B, H] rows is exactly the
flattened [S, B, H], because each rank holds a contiguous block of the sequence.

Under Megatron's pipeline schedule the op is called once per micro-batch on the last stage. Its
backward runs when the schedule back-propagates that micro-batch: every TP rank runs the same
micro-batch order, so the grad_h all-reduce matches up; grad_W_k flows to the weight through autograd
(param.grad, which Megatron's DDP hook adds into main_grad) and accumulates across micro-batches. Each
in-flight micro-batch holds h plus four [T] vectors, as the unfused output layer holds h. In the
forward-only passes (old policy, reference) call it under torch.no_grad(): nothing is saved.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from rest_megatron.ops.vocab_parallel import (
    TokenStats,
    accumulate_local_stats,
    block_rows,
    check_targets,
    combine_across_shards,
    local_logits_grad,
    local_targets,
    output_grads,
    shard_geometry,
)

# torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor (the old names warn); clusters run
# older torch, which only has the old names. Same arguments either way.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _tp_active(group: dist.ProcessGroup | None) -> bool:
    return group is not None and dist.get_world_size(group) > 1


def _gather_sequence(hidden: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """[N, H] sequence shard -> [TP·N, H], rank-major."""
    if not _tp_active(group):
        return hidden
    out = hidden.new_empty(hidden.shape[0] * dist.get_world_size(group), hidden.shape[1])
    _all_gather(out, hidden.contiguous(), group=group)
    return out


class _FusedOutputTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, targets, group, geom, chunk, sequence_parallel, ignore_index, entropy_grad
    ):
        h = _gather_sequence(hidden, group) if sequence_parallel else hidden  # [T, H]
        T, n = h.shape[0], geom.num_valid
        if targets.shape[0] != T:
            raise ValueError(
                f"{T} hidden rows{' after the sequence-parallel gather' if sequence_parallel else ''} "
                f"but {targets.shape[0]} targets"
            )
        w = weight[:n]  # [n, H] rows of real (not padding) vocabulary
        idx, is_local = local_targets(targets, geom, ignore_index)  # [T], [T]
        m_local = h.new_empty(T, dtype=torch.float32)
        packed = h.new_empty(4, T, dtype=torch.float64)
        rows = block_rows(n, h.device)
        for r0 in range(0, T, chunk):
            r = slice(r0, r0 + chunk)
            z = h[r] @ w.t()  # [C, V/tp], the only chunk alive
            accumulate_local_stats(z, idx[r], is_local[r], m_local[r], packed[:, r], rows)
            del z
        stats, max_z, log_s = combine_across_shards(
            m_local, packed, is_local, targets, ignore_index, group, n > 0
        )
        ctx.save_for_backward(hidden, weight, targets, max_z, log_s, stats.entropy)
        ctx.geom, ctx.chunk, ctx.group = geom, chunk, group
        ctx.sequence_parallel, ctx.ignore_index, ctx.entropy_grad = (
            sequence_parallel,
            ignore_index,
            entropy_grad,
        )
        # One call: each call replaces the previous set of non-differentiable outputs.
        ctx.mark_non_differentiable(
            *([stats.collision] if entropy_grad else [stats.collision, stats.entropy])
        )
        return stats.logprob, stats.entropy, stats.collision

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp, g_h, _g_collision):
        hidden, weight, targets, max_z, log_s, entropy = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_lp, g_h = output_grads(ctx, g_lp, g_h, targets)
        group, n, chunk = ctx.group, ctx.geom.num_valid, ctx.chunk
        h = _gather_sequence(hidden, group) if ctx.sequence_parallel else hidden  # [T, H]
        w = weight[:n]  # [n, H]
        idx, is_local = local_targets(targets, ctx.geom, ctx.ignore_index)
        grad_h = torch.zeros_like(h) if need_h else None  # [T, H]
        # float32 accumulator across chunks for low-precision weights; float32 weights accumulate in place.
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # [V/tp, H]
        rows = block_rows(n, h.device)
        for r0 in range(0, h.shape[0] if n > 0 else 0, chunk):  # n = 0: an all-padding shard
            r = slice(r0, r0 + chunk)
            g = h[r] @ w.t()  # [C, n] recomputed logits, overwritten below by their gradient
            for b0 in range(0, g.shape[0], rows):
                b, rb = slice(b0, b0 + rows), slice(r0 + b0, r0 + min(b0 + rows, g.shape[0]))
                g[b] = local_logits_grad(
                    g[b],
                    max_z[rb],
                    log_s[rb],
                    g_lp[rb],
                    None if g_h is None else g_h[rb],
                    entropy[rb],
                    idx[rb],
                    is_local[rb],
                )
            if need_h:
                torch.mm(g, w, out=grad_h[r])
            if need_w:
                if g.dtype == torch.float32:
                    grad_w[:n].addmm_(g.t(), h[r])
                else:
                    grad_w[:n] += (g.t() @ h[r]).float()
            del g
        if need_h and _tp_active(group):
            if ctx.sequence_parallel:
                shard = hidden.new_empty(hidden.shape)
                _reduce_scatter(shard, grad_h, group=group)
                grad_h = shard
            else:
                dist.all_reduce(grad_h, group=group)
        if need_w:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None, None, None, None


def fused_output_token_stats(
    hidden: Tensor,
    output_weight_shard: Tensor,
    targets: Tensor,
    tp_group: dist.ProcessGroup | None,
    chunk_size: int = 512,
    *,
    vocab_size: int | None = None,
    ignore_index: int = -100,
    entropy_grad: bool = False,
    sequence_parallel: bool = False,
) -> TokenStats:
    """log π(y), H and Σπ² per token straight from the final hidden states and the output weight shard.

    Args:
        hidden: [..., H] final hidden states (after the final norm), e.g. Megatron's [S, B, H]; with
            `sequence_parallel` this rank's sequence shard [S/TP, B, H].
        output_weight_shard: [V_padded/TP, H], the output layer's weight (or the shared embedding
            weight when embeddings are tied).
        targets: global token ids, e.g. labels.t() of shape [S, B] (full sequence even with sequence
            parallelism); its numel must equal the number of (gathered) hidden rows.
        tp_group: the tensor-parallel group; None for no TP.
        chunk_size: rows of logits computed at a time. Peak extra memory is about
            chunk_size × V/TP × (dtype bytes) plus one float32 block; larger chunks give faster matmuls.
        vocab_size, ignore_index, entropy_grad: as in `vocab_parallel_token_stats`.
        sequence_parallel: `hidden` is sequence-sharded over `tp_group` (Megatron's sequence parallelism).

    Returns:
        TokenStats of float32 tensors shaped like `targets`. Gradients reach `hidden` (all-reduced, or
        reduce-scattered with sequence parallelism, over TP) and `output_weight_shard`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if output_weight_shard.dim() != 2 or hidden.shape[-1] != output_weight_shard.shape[1]:
        raise ValueError(
            f"hidden [..., {hidden.shape[-1]}] does not match the output weight "
            f"{tuple(output_weight_shard.shape)}; expected [V_padded/TP, {hidden.shape[-1]}]"
        )
    geom = shard_geometry(output_weight_shard.shape[0], tp_group, vocab_size)
    check_targets(targets, vocab_size or output_weight_shard.shape[0] * geom.tp_size, ignore_index)
    logprob, entropy, collision = _FusedOutputTokenStats.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        output_weight_shard,
        targets.reshape(-1).long(),
        tp_group,
        geom,
        chunk_size,
        sequence_parallel and _tp_active(tp_group),
        ignore_index,
        entropy_grad,
    )
    shape = targets.shape
    return TokenStats(logprob.view(shape), entropy.view(shape), collision.view(shape))
