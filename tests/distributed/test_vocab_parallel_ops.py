"""The vocab-parallel token statistics on real gloo ranks: TP = 1, 2 and 4 against float64.

One 4-rank call checks every layout (TP=1 as four single-rank groups, TP=2 as two groups, TP=4), the
shard op and the fused op (also with sequence parallelism), padded vocabularies including shards that
are all padding, extreme logits, bf16 and targets on every shard edge. Each rank compares its own
outputs and gradients with a float64 full-vocabulary reference built from the same seed and returns
the errors; the test asserts on all of them. A second call counts the collectives with torch.profiler,
which records every c10d op that reaches the process group (nothing is patched).
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from rest_megatron.ops import fused_output_token_stats, vocab_parallel_token_stats
from tests.ops.reference import (
    FUSED_VALUE_RTOL,
    GRAD_RTOL,
    VALUE_RTOL,
    fresh_seed,
    fused_op_logits,
    make_logits,
    make_targets,
    reference_stats,
    rel_err,
    shard_edges,
)

WORLD = 4
T, HID, V_PAD = 48, 16, 96  # V_PAD divisible by every TP; T divisible for sequence parallelism
_groups: dict[int, dist.ProcessGroup] = {}


def _tp_group(tp: int) -> dist.ProcessGroup:
    """This rank's group of `tp` consecutive ranks (every rank creates every group, in order)."""
    if tp not in _groups:
        for start in range(0, WORLD, tp):
            group = dist.new_group(list(range(start, start + tp)), timeout=timedelta(seconds=60))
            if start <= dist.get_rank() < start + tp:
                _groups[tp] = group
    return _groups[tp]


def _shard_errors(seed: int, tp: int, vocab: int, extreme: bool, dtype: torch.dtype) -> list[tuple]:
    group, shard = _tp_group(tp), V_PAD // tp
    cols = slice(dist.get_rank(group) * shard, (dist.get_rank(group) + 1) * shard)
    gen = torch.Generator().manual_seed(seed)
    logits = make_logits(gen, T, V_PAD, extreme).to(dtype)
    logits[:, vocab:] = 30.0  # padding: must be masked
    targets = make_targets(gen, T, vocab, shard_edges(shard, tp, vocab))
    g_lp, g_h = torch.randn(T, generator=gen), torch.randn(T, generator=gen)
    ref_z = logits.double().requires_grad_()
    ref = reference_stats(ref_z, targets, vocab)
    (ref[0] @ g_lp.double() + ref[1] @ g_h.double()).backward()
    out, label = [], f"shard tp={tp} vocab={vocab} extreme={extreme} {dtype}"
    for chunk in (1, 5, None):
        z = logits[:, cols].clone().requires_grad_()
        stats = vocab_parallel_token_stats(
            z, targets, group, vocab_size=vocab, entropy_grad=True, chunk_size=chunk
        )
        (stats.logprob @ g_lp + stats.entropy @ g_h).backward()
        for name, ours, expected in zip(stats._fields, stats, ref):
            out.append((f"{label} chunk={chunk} {name}", rel_err(ours, expected), VALUE_RTOL[name]))
        grad_tol = GRAD_RTOL if dtype == torch.float32 else 1e-2
        out.append((f"{label} chunk={chunk} grad", rel_err(z.grad, ref_z.grad[:, cols]), grad_tol))
    return out


def _fused_errors(seed: int, tp: int, vocab: int, sequence_parallel: bool) -> list[tuple]:
    group, shard = _tp_group(tp), V_PAD // tp
    rank = dist.get_rank(group)
    rows = slice(rank * T // tp, (rank + 1) * T // tp) if sequence_parallel else slice(None)
    gen = torch.Generator().manual_seed(seed)
    hidden, weight = torch.randn(T, HID, generator=gen), torch.randn(V_PAD, HID, generator=gen) * 0.7
    weight[vocab:] = 5.0  # padding rows
    targets = make_targets(gen, T, vocab, shard_edges(shard, tp, vocab))
    g_lp, g_h = torch.randn(T, generator=gen), torch.randn(T, generator=gen)
    ref_h, ref_w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = reference_stats(ref_h @ ref_w.t(), targets, vocab)
    (ref[0] @ g_lp.double() + ref[1] @ g_h.double()).backward()
    out, label = [], f"fused tp={tp} vocab={vocab} sp={sequence_parallel}"
    for chunk in (1, 7, T + 3):
        h = hidden[rows].clone().requires_grad_()
        w = weight[rank * shard : (rank + 1) * shard].clone().requires_grad_()
        stats = fused_output_token_stats(
            h,
            w,
            targets,
            group,
            chunk,
            vocab_size=vocab,
            entropy_grad=True,
            sequence_parallel=sequence_parallel,
        )
        (stats.logprob @ g_lp + stats.entropy @ g_h).backward()
        # The op's own error, given its own float32 logits.
        ref_of_fp32_logits = reference_stats(
            fused_op_logits(hidden, weight, chunk, vocab, tp), targets, vocab
        )
        for name, ours, expected, given_logits in zip(stats._fields, stats, ref, ref_of_fp32_logits):
            out.append((f"{label} chunk={chunk} {name}", rel_err(ours, expected), FUSED_VALUE_RTOL[name]))
            out.append(
                (f"{label} chunk={chunk} {name} (fp32 logits)", rel_err(ours, given_logits), VALUE_RTOL[name])
            )
        out.append((f"{label} chunk={chunk} grad_h", rel_err(h.grad, ref_h.grad[rows]), GRAD_RTOL))
        grad_w_ref = ref_w.grad[rank * shard : (rank + 1) * shard]
        out.append((f"{label} chunk={chunk} grad_w", rel_err(w.grad, grad_w_ref), GRAD_RTOL))
    return out


def _all_errors(seed: int) -> list[tuple]:
    torch.manual_seed(seed)
    out = []
    for tp in (1, 2, 4):
        for vocab in (V_PAD, V_PAD - 7, 20):  # no padding; padding in the last shard; all-padding shards
            out += _shard_errors(seed, tp, vocab, extreme=False, dtype=torch.float32)
            out += _fused_errors(seed, tp, vocab, sequence_parallel=False)
            if tp > 1:
                out += _fused_errors(seed, tp, vocab, sequence_parallel=True)
        out += _shard_errors(seed, tp, V_PAD - 7, extreme=True, dtype=torch.float32)
        out += _shard_errors(seed, tp, V_PAD - 7, extreme=False, dtype=torch.bfloat16)
    return out


def test_every_tp_layout_matches_float64(gloo) -> None:
    seed = fresh_seed()
    results = gloo(WORLD).run(_all_errors, seed)
    failures = [(rank, *row) for rank, rows in enumerate(results) for row in rows if not row[1] <= row[2]]
    assert len(results[0]) > 200
    assert not failures, f"seed={seed}: {len(failures)} checks failed, first: {failures[:5]}"


def _count_collectives(fn) -> list[str]:
    """Names of the c10d collectives `fn` issues, from torch.profiler's op events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [
        e.name for e in sorted(prof.events(), key=lambda e: e.time_range.start) if e.name.startswith("c10d::")
    ]


def _collectives_per_call(tp: int) -> dict[str, list[str]]:
    group, shard = _tp_group(tp), V_PAD // tp
    torch.manual_seed(0)
    z = torch.randn(T, shard, requires_grad=True)
    targets = torch.randint(0, V_PAD, (T,))
    h_full, w = torch.randn(T, HID, requires_grad=True), torch.randn(shard, HID, requires_grad=True)
    h_sp = torch.randn(T // tp, HID, requires_grad=True)
    counts, holder = {}, {}

    def forward(name: str, call) -> None:
        counts[f"{name} forward"] = _count_collectives(lambda: holder.__setitem__(name, call()))
        counts[f"{name} backward"] = _count_collectives(lambda: holder[name].logprob.sum().backward())

    forward("shard", lambda: vocab_parallel_token_stats(z, targets, group, chunk_size=7))
    forward("fused", lambda: fused_output_token_stats(h_full, w, targets, group, 7))
    forward("fused-sp", lambda: fused_output_token_stats(h_sp, w, targets, group, 7, sequence_parallel=True))
    return counts


def test_exactly_two_collectives_per_forward(gloo) -> None:
    for rank_counts in gloo(WORLD).run(_collectives_per_call, 2) + gloo(WORLD).run(_collectives_per_call, 4):
        assert rank_counts == {
            "shard forward": ["c10d::allreduce_", "c10d::allreduce_"],  # max, packed sum
            "shard backward": [],
            "fused forward": ["c10d::allreduce_", "c10d::allreduce_"],
            "fused backward": ["c10d::allreduce_"],  # grad_h
            "fused-sp forward": ["c10d::_allgather_base_", "c10d::allreduce_", "c10d::allreduce_"],
            "fused-sp backward": ["c10d::_allgather_base_", "c10d::_reduce_scatter_base_"],
        }


TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}


def _megatron_head_errors(seed: int, tied: bool) -> list[tuple]:
    """A real GPTModel at TP=2: Megatron's own per-token cross entropy vs our stats from its hidden states."""
    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.model.builder import build_gpt_model, model_spec_from_hf, transformer_config
    from rest_megatron.ops.megatron_head import hidden_states_instead_of_logits, model_token_stats

    init_model_parallel(ParallelLayout(tp=2), seed=1234, timeout_s=60)
    spec = model_spec_from_hf({**TINY_QWEN3, "tie_word_embeddings": tied})
    B, S = 3, 16
    model = build_gpt_model(spec, transformer_config(spec, tp=2), max_sequence_length=S)
    gen = torch.Generator().manual_seed(seed)
    tokens, labels = torch.randint(0, 1000, (2, B, S), generator=gen)
    positions = torch.arange(S).expand(B, S)

    # Megatron's path: logits [S, B, V/tp] and vocab_parallel_cross_entropy over the padded vocabulary.
    megatron_logprob = -model(tokens, positions, None, labels=labels)  # [B, S]
    megatron_logprob.sum().backward()
    megatron_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    with hidden_states_instead_of_logits(model):
        hidden = model(tokens, positions, None)  # [B, S, H]: no logits anywhere
    stats = model_token_stats(model, hidden, labels, chunk_size=5)  # padded vocab, as Megatron's loss
    stats.logprob.sum().backward()
    out = [(f"tied={tied} logprob", rel_err(stats.logprob, megatron_logprob), GRAD_RTOL)]
    assert stats.logprob.shape == (B, S) and megatron_grads.keys() == {
        name for name, p in model.named_parameters() if p.grad is not None
    }
    out += [
        (f"tied={tied} grad {name}", rel_err(p.grad, megatron_grads[name]), GRAD_RTOL)
        for name, p in model.named_parameters()
        if p.grad is not None
    ]
    return out


def test_replaces_the_output_layer_of_a_megatron_model(gloo) -> None:
    seed = fresh_seed()
    pool = gloo(WORLD)
    results = pool.run(_megatron_head_errors, seed, False) + pool.run(_megatron_head_errors, seed, True)
    failures = [row for rows in results for row in rows if not row[1] <= row[2]]
    assert len(results[0]) > 10
    assert not failures, f"seed={seed}: {failures[:5]}"
