"""vocab_parallel_token_stats on one rank (TP=1) against a float64 full-vocabulary reference.

Multi-rank checks (TP=2, 4, collectives counted) are in tests/distributed/test_vocab_parallel_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from rest_megatron.ops import TokenStats, vocab_parallel_token_stats
from tests.ops.reference import (
    GRAD_RTOL,
    IGNORE,
    VALUE_RTOL,
    fresh_seed,
    make_logits,
    make_targets,
    reference_stats,
    rel_err,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
T, V_PAD, VOCAB = 41, 640, 600  # 40 padding columns


def _inputs(seed: int, extreme: bool = False):
    gen = torch.Generator().manual_seed(seed)
    logits = make_logits(gen, T, V_PAD, extreme)
    logits[:, VOCAB:] = 30.0  # padding columns would dominate every sum if they were not masked
    targets = make_targets(gen, T, VOCAB, [0, VOCAB - 1])
    return logits, targets, torch.randn(T, generator=gen), torch.randn(T, generator=gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("extreme", [False, True], ids=["randn", "extreme"])
@pytest.mark.parametrize("chunk_size", [1, 3, None, 1000], ids=lambda c: f"chunk{c}")
def test_values_and_logit_grads_match_float64(device: str, extreme: bool, chunk_size: int | None) -> None:
    seed = fresh_seed()
    logits, targets, g_lp, g_h = _inputs(seed, extreme)
    ref_z = logits.double().requires_grad_()
    ref = reference_stats(ref_z, targets, VOCAB)
    (ref[0] @ g_lp.double() + ref[1] @ g_h.double()).backward()
    for entropy_grad in (False, True):
        z = logits.clone().to(device).requires_grad_()
        stats = vocab_parallel_token_stats(
            z, targets.to(device), None, vocab_size=VOCAB, entropy_grad=entropy_grad, chunk_size=chunk_size
        )
        assert isinstance(stats, TokenStats) and all(s.dtype == torch.float32 for s in stats)
        for name, ours, expected in zip(stats._fields, stats, ref):
            assert rel_err(ours.cpu(), expected) < VALUE_RTOL[name], (name, seed)
        assert stats.entropy.requires_grad == entropy_grad and not stats.collision.requires_grad
        loss = stats.logprob @ g_lp.to(device)
        if entropy_grad:
            loss = loss + stats.entropy @ g_h.to(device)
        loss.backward()
        grad = z.grad.cpu()
        assert torch.all(grad[:, VOCAB:] == 0), seed  # vocab padding
        if entropy_grad:
            assert rel_err(grad, ref_z.grad) < GRAD_RTOL, seed
        else:
            ref_lp_z = logits.double().requires_grad_()
            (reference_stats(ref_lp_z, targets, VOCAB)[0] @ g_lp.double()).backward()
            assert rel_err(grad, ref_lp_z.grad) < GRAD_RTOL, seed
            assert torch.all(grad[targets == IGNORE] == 0), seed


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_accumulates_in_float32(device: str) -> None:
    seed = fresh_seed()
    logits, targets, g_lp, g_h = _inputs(seed)
    z = logits.to(device, torch.bfloat16).requires_grad_()  # a copy: new dtype
    stats = vocab_parallel_token_stats(z, targets.to(device), None, vocab_size=VOCAB, entropy_grad=True)
    (stats.logprob @ g_lp.to(device) + stats.entropy @ g_h.to(device)).backward()
    ref_z = z.detach().cpu().double().requires_grad_()  # the same bf16 values, exactly
    ref = reference_stats(ref_z, targets, VOCAB)
    (ref[0] @ g_lp.double() + ref[1] @ g_h.double()).backward()
    for name, ours, expected in zip(stats._fields, stats, ref):
        assert rel_err(ours.cpu(), expected) < VALUE_RTOL[name], (name, seed)  # float32 sums of exact bf16
    assert z.grad.dtype == torch.bfloat16
    assert rel_err(z.grad.cpu(), ref_z.grad) < 1e-2, seed  # the gradient is rounded to bf16


def test_leading_dims_follow_the_targets() -> None:
    seed = fresh_seed()
    gen = torch.Generator().manual_seed(seed)
    S, B = 7, 3
    logits = make_logits(gen, S * B, V_PAD).view(S, B, V_PAD)  # Megatron's [S, B, V/tp]
    labels = torch.randint(0, VOCAB, (B, S), generator=gen)
    stats = vocab_parallel_token_stats(logits, labels.t().int(), None, vocab_size=VOCAB)  # int32 ids too
    flat = vocab_parallel_token_stats(
        logits.reshape(-1, V_PAD), labels.t().reshape(-1), None, vocab_size=VOCAB
    )
    assert stats.logprob.shape == (S, B)
    for ours, expected in zip(stats, flat):
        torch.testing.assert_close(ours.reshape(-1), expected, rtol=0, atol=0)


def test_no_grad_and_detached_inputs() -> None:
    logits, targets, _, _ = _inputs(fresh_seed())
    with torch.no_grad():
        stats = vocab_parallel_token_stats(logits.requires_grad_(), targets, None, vocab_size=VOCAB)
    assert not any(s.requires_grad for s in stats)


def test_user_errors_say_what_to_fix() -> None:
    logits, targets, _, _ = _inputs(fresh_seed())
    bad = targets.clone()
    bad[5] = VOCAB  # a padding id
    with pytest.raises(ValueError, match=r"targets must be in \[0, 600\)"):
        vocab_parallel_token_stats(logits, bad, None, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="true vocabulary size"):
        vocab_parallel_token_stats(logits, targets, None, vocab_size=V_PAD + 1)
    with pytest.raises(ValueError, match="disagree"):
        vocab_parallel_token_stats(logits, targets[:-1], None)
    with pytest.raises(ValueError, match="chunk_size"):
        vocab_parallel_token_stats(logits, targets, None, vocab_size=VOCAB, chunk_size=0)
