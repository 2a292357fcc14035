"""Vocab-parallel per-token statistics (log π(y), entropy, Σπ²), plain and fused with the output layer."""

from rest_megatron.ops.fused_output import fused_output_token_stats
from rest_megatron.ops.vocab_parallel import TokenStats, vocab_parallel_token_stats

__all__ = ["TokenStats", "fused_output_token_stats", "vocab_parallel_token_stats"]
