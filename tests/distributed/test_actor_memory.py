"""The actor never materializes the [tokens, vocab] logits: peak memory against the same model with logits.

Measured with `rest_megatron.testing.memory.peak_allocated_bytes` (every tensor allocation through torch's
CPU allocator, exact to the byte) at TP=2 on each rank. The baseline is the identical Megatron model
producing its vocab-parallel logits (Megatron's own output layer and cross-entropy). Sequences are long
short and rows many, so one logits shard outweighs attention's S² scores and a layer's activations: a
pass that allocated the logits anywhere would show it. Each measurement follows a warm-up call, so
first-call caches (RoPE tables, Adam's moments) are not counted. Besides the peaks, the largest
single allocation of each pass is recorded: ours must stay below one logits shard, the baseline's not.
"""

from __future__ import annotations

import torch

from rest_megatron.algo.regions import NUM_REGIONS
from rest_megatron.assets import tiny_hf_config
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import (
    build_gpt_model,
    model_spec_from_hf,
    padded_vocab_size,
    transformer_config,
)
from rest_megatron.ops.megatron_head import hidden_states_instead_of_logits
from rest_megatron.testing.memory import peak_allocated_bytes
from rest_megatron.trainer.actor import build_actor


def largest_allocation_bytes(fn) -> int:
    """The largest single tensor allocation `fn()` makes through torch's CPU allocator."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    largest, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.alloc_size > 0:
            largest = max(largest, node.extra_fields.alloc_size)
        stack.extend(node.children)
    return largest


ROWS, SEQ = 32, 32  # many short rows: attention's S² stays small next to the logits


def _batch(vocab: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (ROWS, SEQ + 1), generator=gen)
    return [
        {
            "tokens": tokens[:, :-1],
            "labels": tokens[:, 1:],
            "loss_mask": torch.ones(ROWS, SEQ),
            "region_mask": 1 << torch.randint(0, NUM_REGIONS, (ROWS, SEQ), generator=gen),
            "advantages": torch.randn(ROWS, 1, generator=gen).expand(ROWS, SEQ).contiguous(),
            "weights": torch.ones(ROWS, SEQ),
        }
    ]


def _peaks() -> dict[str, int]:
    init_model_parallel(ParallelLayout(tp=2, pp=1), seed=0, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-4), tp=2, chunk_size=64)
    batch = _batch(spec.vocab_size)
    peaks: dict[str, int] = {}
    batch[0]["old_logprobs"] = actor.token_stats(batch)[0].logprob
    peaks["stats"], _ = peak_allocated_bytes(lambda: actor.token_stats(batch))
    positions = torch.arange(SEQ).expand(ROWS, SEQ)

    def ours_train() -> None:
        with hidden_states_instead_of_logits(actor.network):
            hidden = actor.network(batch[0]["tokens"], positions, None)
        actor.stats_from_hidden(hidden, batch[0]["labels"], entropy_grad=True).logprob.sum().backward()

    ours_train()
    peaks["train"], _ = peak_allocated_bytes(ours_train)
    actor.train_step(batch, AlgorithmConfig())
    peaks["train_step_largest"] = largest_allocation_bytes(lambda: actor.train_step(batch, AlgorithmConfig()))
    peaks["stats_largest"] = largest_allocation_bytes(lambda: actor.token_stats(batch))

    baseline = build_gpt_model(spec, transformer_config(spec, tp=2))
    with torch.no_grad():
        baseline(batch[0]["tokens"], positions, None)
        peaks["logits_forward"], _ = peak_allocated_bytes(
            lambda: baseline(batch[0]["tokens"], positions, None)
        )

    def logits_train() -> None:
        baseline(batch[0]["tokens"], positions, None, labels=batch[0]["labels"]).sum().backward()

    logits_train()
    peaks["logits_train"], _ = peak_allocated_bytes(logits_train)
    peaks["logits_train_largest"] = largest_allocation_bytes(logits_train)
    peaks["logits_shard_bytes"] = ROWS * SEQ * padded_vocab_size(spec.vocab_size, 2) // 2 * 4
    return peaks


def test_actor_never_allocates_the_logits(gloo) -> None:
    for peaks in gloo(2).run(_peaks):
        shard = peaks["logits_shard_bytes"]
        # Forward only: the logits baseline peaks higher by most of a logits shard. (Peaks move by a few
        # hundred KB from run to run with the order of frees, hence the margin.)
        assert peaks["stats"] + 0.5 * shard <= peaks["logits_forward"], peaks
        # Training peaks are dominated by saved activations, so they are recorded, not compared.
        # And no single tensor of logits size is ever allocated by our passes (the baseline's is).
        assert peaks["logits_train_largest"] >= shard, peaks
        assert peaks["train_step_largest"] < shard and peaks["stats_largest"] < shard, peaks
