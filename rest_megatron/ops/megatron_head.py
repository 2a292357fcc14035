"""Token statistics in place of a Megatron GPTModel's output layer: the model never produces logits.

On the last pipeline stage the actor runs

    with hidden_states_instead_of_logits(gpt):                 # gpt: the unwrapped GPTModel
        hidden = model(tokens, position_ids, attention_mask)   # [B, S(/TP), H], labels=None
    stats = model_token_stats(gpt, hidden, labels, vocab_size=tokenizer_vocab_size)   # [B, S] each

`model` may be the DDP / Float16Module-wrapped model; `gpt` is the GPTModel inside it
(`megatron.core.utils.unwrap_model`). Inside the context the output layer (a ColumnParallelLinear
over the vocabulary) returns its input unchanged, so GPTModel's `labels is None` branch hands back the
final-norm hidden states transposed to [B, S(/TP), H] where it would return logits. `model_token_stats`
transposes them back to Megatron's sequence-first layout and calls `fused_output_token_stats` with the
output weight (the shared embedding when embeddings are tied), the TP group and the model's
sequence-parallel setting. Gradients reach the decoder through the hidden states and the output
weight through autograd (param.grad, which Megatron's DDP hook moves into main_grad).

Vocab padding: Megatron's own cross entropy includes the padded columns of the output layer in the
softmax; pass the tokenizer's `vocab_size` to leave them out, as the Hugging Face model does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from megatron.core import parallel_state
from torch import Tensor

from rest_megatron.ops.fused_output import fused_output_token_stats
from rest_megatron.ops.vocab_parallel import TokenStats


def _return_input(hidden_states: Tensor, weight: Tensor | None = None, **_: Any) -> tuple[Tensor, None]:
    return hidden_states, None


@contextmanager
def hidden_states_instead_of_logits(gpt: torch.nn.Module) -> Iterator[None]:
    """Make `gpt` (a GPTModel's last stage) return its final hidden states instead of logits."""
    layer = gpt.output_layer
    layer.forward = _return_input  # an instance attribute shadows ColumnParallelLinear.forward
    try:
        yield
    finally:
        del layer.forward


def output_weight(gpt: torch.nn.Module) -> Tensor:
    """The [V_padded/TP, H] weight the output layer would use: its own, or the tied embedding."""
    if gpt.share_embeddings_and_output_weights:
        return gpt.shared_embedding_or_output_weight()
    return gpt.output_layer.weight


def model_token_stats(
    gpt: torch.nn.Module,
    hidden: Tensor,
    labels: Tensor,
    *,
    vocab_size: int | None = None,
    chunk_size: int = 512,
    ignore_index: int = -100,
    entropy_grad: bool = False,
) -> TokenStats:
    """log π, H, Σπ² of `labels` [B, S] from the hidden states [B, S(/TP), H] the model returned.

    Returns TokenStats of [B, S] float32 tensors (batch-first, like Megatron's per-token loss).
    """
    weight = output_weight(gpt)
    stats = fused_output_token_stats(
        hidden.transpose(0, 1).to(weight.dtype),  # [S(/TP), B, H]; Float16Module hands back float32
        weight,
        labels.t(),  # [S, B], the order of the flattened sequence-first hidden rows
        parallel_state.get_tensor_model_parallel_group(),
        chunk_size,
        vocab_size=vocab_size,
        ignore_index=ignore_index,
        entropy_grad=entropy_grad,
        sequence_parallel=gpt.config.sequence_parallel,
    )
    return TokenStats(*(t.t() for t in stats))
