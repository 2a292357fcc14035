"""Sampling rules of the embedded engine: SGLang's logprob semantics and its top-k/top-p truncation."""

from __future__ import annotations

import torch

from rest_megatron.rollout.engine.sampling import RowSampling, sample_row, truncate_probs


def _settings(
    temperature: float = 1.0, top_p: float = 1.0, top_k: int = -1, original: bool = False, seed: int = 0
):
    return RowSampling(temperature, top_p, top_k, original, torch.Generator().manual_seed(seed))


def test_logprob_at_temperature_one_is_the_raw_log_softmax() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    for seed in range(20):
        token, logprob, _ = sample_row(logits, _settings(seed=seed))
        assert logprob == float(torch.log_softmax(logits, -1)[token])


def test_logprob_at_other_temperatures_follows_sglang() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(2))
    token, logprob, _ = sample_row(logits, _settings(temperature=0.5, top_k=5, seed=3))
    # temperature-scaled, before top-k renormalization
    assert abs(logprob - float(torch.log_softmax(logits / 0.5, -1)[token])) < 1e-6
    token, logprob, _ = sample_row(logits, _settings(temperature=0.5, original=True, seed=3))
    assert abs(logprob - float(torch.log_softmax(logits, -1)[token])) < 1e-6


def test_greedy_is_argmax_with_raw_logprob() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(4))
    for settings in (_settings(temperature=0.0), _settings(temperature=0.7, top_k=1)):
        token, logprob, _ = sample_row(logits, settings)
        assert token == int(logits.argmax()) and logprob == float(torch.log_softmax(logits, -1).max())


def test_top_k_and_top_p_keep_the_right_tokens() -> None:
    probs = torch.tensor([0.05, 0.4, 0.3, 0.2, 0.05])
    assert torch.equal(truncate_probs(probs, 2, 1.0) > 0, torch.tensor([False, True, True, False, False]))
    # mass before each token: 0.4 -> 0, 0.3 -> 0.4, 0.2 -> 0.7, the rest -> 0.9: top_p 0.75 keeps three
    kept = truncate_probs(probs, -1, 0.75)
    assert torch.equal(kept > 0, torch.tensor([False, True, True, True, False]))
    assert abs(float(kept.sum()) - 1.0) < 1e-6
    assert torch.equal(truncate_probs(probs, -1, 0.01) > 0, torch.tensor([False, True, False, False, False]))


def test_sampling_is_reproducible_by_seed_and_matches_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    draws = [sample_row(logits, _settings(seed=s))[0] for s in range(3000)]
    assert draws[:50] == [sample_row(logits, _settings(seed=s))[0] for s in range(50)]
    freq = torch.bincount(torch.tensor(draws), minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03)
    top1 = [sample_row(logits, _settings(top_p=0.5, seed=s))[0] for s in range(200)]
    assert set(top1) == {0}
