"""Vocab-parallel per-token statistics (log π(y), entropy, Σπ²), plain and fused with the output layer.

- `vocab_parallel.py`: from a logits shard (the math of DESIGN §5).
- `fused_output.py`: from the hidden states and the output weight shard, chunked; no logits at all.
- `megatron_head.py`: the fused op in place of a Megatron GPTModel's output layer.
"""

from rest_megatron.ops.fused_output import fused_output_token_stats
from rest_megatron.ops.megatron_head import hidden_states_instead_of_logits, model_token_stats, output_weight
from rest_megatron.ops.vocab_parallel import TokenStats, vocab_parallel_token_stats

__all__ = [
    "TokenStats",
    "fused_output_token_stats",
    "hidden_states_instead_of_logits",
    "model_token_stats",
    "output_weight",
    "vocab_parallel_token_stats",
]
