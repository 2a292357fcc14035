"""Search the trainer layouts that can run on G GPUs and pick the cheapest that fits.

Valid: tp divides the attention heads and the KV groups and is at most 8 (one NVLink domain), pp divides
the layers, tp·pp·dp = G, and the optimizer mini-batch splits evenly into micro-batches × dp (the same
rule `config.validation` applies). Sequence parallelism is on whenever tp > 1 (it only saves memory on
GPU). For each (tp, pp) the memory savers are tried from none to all: the distributed optimizer (cheap:
the same communication volume), then full recomputation (about a third more compute).

Preference among the layouts that fit: the smallest cost tp·pp (less communication, smaller bubbles),
where full recomputation (about a third more compute) counts like one doubling of tp·pp; then no
recomputation, then tp before pp (a pipeline idles without many micro-batches), then the savers the
recipe already chose. The memory limit is the GPU's memory minus a headroom fraction kept for what the
estimate does not count (CUDA context, NCCL buffers, fragmentation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from rest_megatron.plan.memory import Architecture, Layout, MemoryEstimate, Workload, estimate

MAX_TP = 8
"""Largest tensor-parallel size considered: TP traffic needs the GPUs of one NVLink node."""


@dataclass(frozen=True)
class Candidate:
    """A layout, the workload it implies and its estimate."""

    layout: Layout
    workload: Workload
    memory: MemoryEstimate

    def fits(self, limit: int) -> bool:
        return self.memory.total <= limit


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_parallel_sizes(
    arch: Architecture, num_gpus: int, mini_batch: int, micro_batch: int
) -> Iterator[tuple[int, int, int]]:
    """Every (tp, pp, dp) that the model, the GPU count and the batch allow, smallest tp·pp first."""
    for tp in _divisors(num_gpus):
        if tp > MAX_TP or arch.num_attention_heads % tp or arch.num_query_groups % tp:
            continue
        for pp in _divisors(num_gpus // tp):
            dp = num_gpus // (tp * pp)
            if arch.num_layers % pp == 0 and mini_batch % (micro_batch * dp) == 0:
                yield tp, pp, dp


def candidates(arch: Architecture, num_gpus: int, mini_batch: int, base: Workload) -> list[Candidate]:
    """For each valid (tp, pp, dp), the estimates with no saver, + distributed optimizer, + recompute."""
    found = []
    for tp, pp, dp in valid_parallel_sizes(arch, num_gpus, mini_batch, base.micro_batch_size):
        work = replace(base, num_microbatches=mini_batch // (base.micro_batch_size * dp))
        for distributed, recompute in ((False, False), (True, False), (True, True)):
            layout = Layout(
                tp=tp,
                pp=pp,
                dp=dp,
                sequence_parallel=tp > 1,
                distributed_optimizer=distributed,
                recompute=recompute,
            )
            found.append(Candidate(layout, work, estimate(arch, layout, work)))
    return found


def preference(candidate: Candidate, recipe: Layout | None = None) -> tuple:
    """Sort key: smaller is better (see the module docstring)."""
    layout = candidate.layout
    differs = recipe is not None and (layout.distributed_optimizer, layout.recompute) != (
        recipe.distributed_optimizer,
        recipe.recompute,
    )
    cost = layout.tp * layout.pp * (2 if layout.recompute else 1)
    return (cost, layout.recompute, layout.pp, differs, layout.distributed_optimizer)


def recommend(found: list[Candidate], limit: int, recipe: Layout | None = None) -> Candidate | None:
    """The preferred candidate within `limit` bytes, or None when nothing fits."""
    fitting = [c for c in found if c.fits(limit)]
    return min(fitting, key=lambda c: preference(c, recipe)) if fitting else None


def per_parallel_size(found: list[Candidate], limit: int, recipe: Layout | None = None) -> list[Candidate]:
    """One row per (tp, pp, dp): its preferred variant that fits, else its smallest."""
    groups: dict[tuple[int, int, int], list[Candidate]] = {}
    for candidate in found:
        layout = candidate.layout
        groups.setdefault((layout.tp, layout.pp, layout.dp), []).append(candidate)
    rows = [
        recommend(group, limit, recipe) or min(group, key=lambda c: c.memory.total)
        for group in groups.values()
    ]
    return sorted(rows, key=lambda c: (c.layout.tp * c.layout.pp, c.layout.pp, c.layout.tp))
