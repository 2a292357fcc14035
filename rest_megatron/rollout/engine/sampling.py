"""Next-token sampling for the embedded engine: pure functions of logits, one row per request.

Which logprob is reported (SGLang's semantics, checked against `sglang/srt/layers/sampler.py`):
- temperature > 0: log softmax(z / T) of the sampled token, i.e. the temperature-scaled
  distribution *before* top-k / top-p truncation and renormalization. At T = 1 this is exactly the
  log-softmax of the raw logits, which is what the trainer recomputes.
- greedy (temperature 0, or top_k = 1): log softmax(z), the raw distribution.
- `original=True` (SGLang's `SGLANG_RETURN_ORIGINAL_LOGPROB=1`, and vLLM's default
  `logprobs_mode=raw_logprobs`): log softmax(z) whatever the temperature.
So at T != 1 the default logprobs are NOT log π of the policy the trainer evaluates; RL recipes
sample at T = 1 (the config's default), or serve with `--return-original-logprob`.

Truncation follows SGLang's torch fallback: top-k keeps the k largest probabilities; top-p keeps
the smallest prefix of the sorted distribution whose mass *before* a token is <= p (so the most
likely token always survives); the survivors are renormalized and sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GREEDY_EPS = 1e-6
"""Temperatures below this are greedy (SGLang uses the same threshold)."""


@dataclass(frozen=True)
class RowSampling:
    """The sampling settings of one row of a batch."""

    temperature: float
    top_p: float
    top_k: int
    original_logprobs: bool
    generator: torch.Generator | None


def truncate_probs(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Zero the probabilities outside top-k / top-p and renormalize. probs: [V] -> [V]."""
    if top_k < 0 and top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(descending=True)  # [V]
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:
        mass_before = sorted_probs.cumsum(0) - sorted_probs
        keep &= mass_before <= top_p
    kept = torch.zeros_like(probs)
    kept[order[keep]] = sorted_probs[keep]
    return kept / kept.sum()


def sample_row(logits: torch.Tensor, settings: RowSampling) -> tuple[int, float, torch.Tensor]:
    """Sample one token from one row of logits [V] (float32).

    Returns:
        (token id, its logprob as documented above, the full logprob vector [V] that was reported)
    """
    raw = torch.log_softmax(logits, dim=-1)  # [V]
    if settings.temperature < GREEDY_EPS or settings.top_k == 1:
        token = int(torch.argmax(logits))
        return token, float(raw[token]), raw
    scaled = torch.log_softmax(logits / settings.temperature, dim=-1)  # [V]
    probs = truncate_probs(scaled.exp(), settings.top_k, settings.top_p)
    token = int(torch.multinomial(probs, 1, generator=settings.generator))
    reported = raw if settings.original_logprobs else scaled
    return token, float(reported[token]), reported
