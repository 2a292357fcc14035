"""fused_output_token_stats on one rank (TP=1): values, hidden/weight gradients and peak memory.

Multi-rank checks (TP=2, 4, sequence parallelism, collectives counted) are in
tests/distributed/test_vocab_parallel_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from rest_megatron.ops import fused_output_token_stats, vocab_parallel_token_stats
from rest_megatron.testing.memory import peak_allocated_bytes
from tests.ops.reference import (
    FUSED_VALUE_RTOL,
    GRAD_RTOL,
    VALUE_RTOL,
    fresh_seed,
    fused_op_logits,
    make_targets,
    reference_stats,
    rel_err,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
T, HID, V_PAD, VOCAB = 37, 24, 520, 500


def _inputs(seed: int, T: int = T, hid: int = HID, v_pad: int = V_PAD, vocab: int = VOCAB):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, hid, generator=gen)
    weight = torch.randn(v_pad, hid, generator=gen) * 0.7
    weight[vocab:] = 5.0  # padding rows: their logits would dominate if they were not masked
    targets = make_targets(gen, T, vocab, [0, vocab - 1])
    return hidden, weight, targets, torch.randn(T, generator=gen), torch.randn(T, generator=gen)


def _reference(hidden, weight, targets, g_lp, g_h, vocab=VOCAB):
    h = hidden.double().requires_grad_()
    w = weight.double().requires_grad_()
    ref = reference_stats(h @ w.t(), targets, vocab)
    (ref[0] @ g_lp.double() + ref[1] @ g_h.double()).backward()
    return ref, h.grad, w.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_size", [1, 5, 16, T + 3], ids=lambda c: f"chunk{c}")
def test_values_and_grads_match_float64(device: str, chunk_size: int) -> None:
    seed = fresh_seed()
    hidden, weight, targets, g_lp, g_h = _inputs(seed)
    ref, ref_gh, ref_gw = _reference(hidden, weight, targets, g_lp, g_h)
    h = hidden.to(device).requires_grad_()
    w = weight.to(device).requires_grad_()
    stats = fused_output_token_stats(
        h, w, targets.to(device), None, chunk_size, vocab_size=VOCAB, entropy_grad=True
    )
    # The op's own float32 logits, float64 statistics: what is left is the op's reduction error.
    given_logits = reference_stats(fused_op_logits(hidden, weight, chunk_size, VOCAB), targets, VOCAB)
    for name, ours, expected, of_fp32_logits in zip(stats._fields, stats, ref, given_logits):
        assert rel_err(ours.cpu(), expected) < FUSED_VALUE_RTOL[name], (name, seed)
        assert rel_err(ours.cpu(), of_fp32_logits) < VALUE_RTOL[name], (name, seed)
    (stats.logprob @ g_lp.to(device) + stats.entropy @ g_h.to(device)).backward()
    assert rel_err(h.grad.cpu(), ref_gh) < GRAD_RTOL, seed
    assert rel_err(w.grad.cpu(), ref_gw) < GRAD_RTOL, seed
    assert torch.all(w.grad[VOCAB:] == 0), seed  # vocab padding rows get no gradient


def test_detached_entropy_and_weight_only_grads() -> None:
    seed = fresh_seed()
    hidden, weight, targets, g_lp, _ = _inputs(seed)
    zero = torch.zeros(T)
    _, _, ref_gw = _reference(hidden, weight, targets, g_lp, zero)
    w = weight.clone().requires_grad_()
    stats = fused_output_token_stats(hidden, w, targets, None, 8, vocab_size=VOCAB)
    assert not stats.entropy.requires_grad and not stats.collision.requires_grad
    (stats.logprob @ g_lp).backward()
    assert rel_err(w.grad, ref_gw) < GRAD_RTOL, seed


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_inputs(device: str) -> None:
    seed = fresh_seed()
    hidden, weight, targets, g_lp, g_h = _inputs(seed)
    h = hidden.to(device, torch.bfloat16).requires_grad_()
    w = weight.to(device, torch.bfloat16).requires_grad_()
    stats = fused_output_token_stats(h, w, targets.to(device), None, 7, vocab_size=VOCAB, entropy_grad=True)
    (stats.logprob @ g_lp.to(device) + stats.entropy @ g_h.to(device)).backward()
    ref, ref_gh, ref_gw = _reference(h.detach().cpu(), w.detach().cpu(), targets, g_lp, g_h)
    # The logits matmul runs in bf16, as Megatron's output layer does: each logit is rounded to 2^-9
    # relative. Worst over 200 seeds: log π 3.2e-3, H 1.1e-2, Σπ² 2.2e-2, grad_h 2.1e-2, grad_W 2.5e-2.
    tol = {"logprob": 1e-2, "entropy": 3e-2, "collision": 6e-2}
    assert all(s.dtype == torch.float32 for s in stats)
    for name, ours, expected in zip(stats._fields, stats, ref):
        assert rel_err(ours.cpu(), expected) < tol[name], (name, seed)
    assert h.grad.dtype == w.grad.dtype == torch.bfloat16
    assert rel_err(h.grad.cpu(), ref_gh) < 6e-2, seed
    assert rel_err(w.grad.cpu(), ref_gw) < 6e-2, seed


def test_megatron_layout_round_trip() -> None:
    """hidden [S, B, H] with targets = labels.t() [S, B] gives [S, B] stats, equal to the flat call."""
    seed = fresh_seed()
    S, B = 6, 4
    hidden, weight, _, _, _ = _inputs(seed, T=S * B)
    labels = torch.randint(0, VOCAB, (B, S), generator=torch.Generator().manual_seed(seed))
    stats = fused_output_token_stats(hidden.view(S, B, HID), weight, labels.t(), None, 5, vocab_size=VOCAB)
    flat = fused_output_token_stats(hidden, weight, labels.t().reshape(-1), None, 5, vocab_size=VOCAB)
    assert stats.logprob.t().shape == (B, S)
    for ours, expected in zip(stats, flat):
        torch.testing.assert_close(ours.reshape(-1), expected, rtol=0, atol=0)


def test_saves_only_per_token_scalars_for_backward() -> None:
    """Per micro-batch activation memory: besides its inputs, the op saves three [T] float32 vectors."""
    hidden, weight, targets, _, _ = _inputs(fresh_seed())
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    inputs = {h.data_ptr(), w.data_ptr(), targets.data_ptr()}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fused_output_token_stats(h, w, targets, None, 8, vocab_size=VOCAB, entropy_grad=True)
    extra = [t for t in saved if t.data_ptr() not in inputs]
    assert len(saved) == len(extra) + 3
    assert sorted(t.shape for t in extra) == [(T,)] * 3 and all(t.dtype == torch.float32 for t in extra)
    with torch.no_grad():
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fused_output_token_stats(h, w, targets, None, 8, vocab_size=VOCAB)
        assert saved == []  # forward-only passes keep nothing


def _fwd_bwd(fused: bool, hidden, weight, targets, g_lp, chunk: int):
    def run() -> None:
        h, w = hidden.requires_grad_(), weight.requires_grad_()
        if fused:
            stats = fused_output_token_stats(h, w, targets, None, chunk)
        else:
            stats = vocab_parallel_token_stats(h @ w.t(), targets, None)
        (stats.logprob @ g_lp).backward()

    return run


def test_peak_memory_does_not_grow_with_tokens() -> None:
    """Forward + backward peak stays at inputs' grads + outputs + one chunk, whatever T is.

    Measured with `peak_allocated_bytes`: torch.profiler's allocation events carry the CPU allocator's
    running total of allocated bytes, so the peak over the call counts every tensor the op and its
    backward create (temporaries, outputs, gradients), byte-exact and independent of RSS or allocator
    page reuse. The same measurement of the unfused path (logits materialized) must see the [T, V]
    logits, which shows the measurement can fail.
    """
    hid, v, chunk = 32, 8192, 16
    peaks, unfused = {}, {}
    for n in (128, 1024):
        hidden, weight, targets, g_lp, _ = _inputs(fresh_seed(), T=n, hid=hid, v_pad=v, vocab=v)
        peaks[n], _ = peak_allocated_bytes(_fwd_bwd(True, hidden, weight, targets, g_lp, chunk))
        hidden.grad = weight.grad = None
        unfused[n], _ = peak_allocated_bytes(_fwd_bwd(False, hidden, weight, targets, g_lp, chunk))
    logits_bytes = 1024 * v * 4
    # Allowed per token: grad_h (hid floats) + [T] vectors (outputs, saved M / log S / H, targets' local
    # ids, packed sums, upstream grads): 32 float32s' worth. Logits would cost v floats per token.
    per_token = hid * 4 + 32 * 4
    # Allowed per call: grad_W, a [chunk, V] chunk and its float32 block temporaries, 1 MiB slack.
    fixed = v * hid * 4 + 4 * chunk * v * 4 + (1 << 20)
    assert peaks[1024] - peaks[128] <= (1024 - 128) * per_token, peaks
    assert peaks[1024] <= fixed + 1024 * per_token, (peaks, fixed)
    assert unfused[1024] >= logits_bytes > 8 * peaks[1024], (unfused, peaks)  # the measurement sees [T, V]


def test_user_errors() -> None:
    hidden, weight, targets, _, _ = _inputs(fresh_seed())
    with pytest.raises(ValueError, match="does not match the output weight"):
        fused_output_token_stats(hidden, weight.t(), targets, None)
    with pytest.raises(ValueError, match="37 hidden rows but 36 targets"):
        fused_output_token_stats(hidden, weight, targets[:-1], None)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_output_token_stats(hidden, weight, targets, None, 0)
