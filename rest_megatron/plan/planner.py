"""From a config and a GPU allotment to a `Plan`: rollout share, trainer candidates, recommendation.

Rollout servers (SGLang/vLLM) run on GPUs of their own, as `slurm/train.sbatch` places them (on GPUs set
aside on the trainer nodes, or on rollout-only nodes): they take `rollout.num_servers × rollout.server_tp`
of the N GPUs and the trainer gets the rest. External servers (`rollout.server_urls`) and the embedded
CPU engine take none. Nothing here prints; `PlanRefused` carries the reason and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rest_megatron.config import Config
from rest_megatron.plan.memory import (
    DTYPE_BYTES,
    GIB,
    Architecture,
    Layout,
    RolloutEstimate,
    Workload,
    estimate,
    estimate_rollout,
    optimizer_bytes_per_param,
)
from rest_megatron.plan.search import (
    MAX_TP,
    Candidate,
    candidates,
    per_parallel_size,
    recommend,
    valid_parallel_sizes,
)

DEFAULT_MEM_FRACTION = {"sglang": 0.85, "vllm": 0.9}
"""Assumed share of a server GPU for weights + KV cache when the recipe does not set it (SGLang's
`mem_fraction_static` default depends on the GPU; vLLM's `gpu_memory_utilization` default is 0.9)."""


class PlanRefused(ValueError):
    """Nothing fits the GPUs given; the message says what, by how much, and what to change."""


@dataclass(frozen=True, kw_only=True)
class RolloutShare:
    """The rollout engine's GPUs and, for GPU engines, one server GPU's memory."""

    engine: str
    num_gpus: int
    mem_fraction: float | None = None
    memory: RolloutEstimate | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything `plan` reports; only built when some layout fits (otherwise `PlanRefused`)."""

    arch: Architecture
    num_gpus: int
    gpu_bytes: int
    limit: int
    """Bytes per GPU the trainer may use: GPU memory less the headroom."""
    rollout: RolloutShare
    trainer_gpus: int
    mini_batch: int
    workload: Workload
    rows: list[Candidate]
    wanted: Layout
    """The layout the recipe asks for (dp 0: derived)."""
    recipe: Candidate | None
    """The recipe's own layout on these GPUs; None when its tp·pp·dp or batch split does not fit them."""
    recommended: Candidate


def recipe_layout(config: Config) -> Layout:
    """The layout the recipe asks for (dp 0 means derived from the GPU count, as in the recipe)."""
    p = config.parallel
    return Layout(
        tp=p.tp,
        pp=p.pp,
        dp=p.dp,
        sequence_parallel=p.sequence_parallel,
        distributed_optimizer=p.use_distributed_optimizer,
        recompute=config.model.recompute_activations,
    )


def rollout_gpus(config: Config) -> int:
    """GPUs of the job that the recipe's rollout servers take (0: CPU engine or external servers)."""
    r = config.rollout
    return 0 if r.engine == "embedded" or r.server_urls else r.num_servers * r.server_tp


def rollout_share(config: Config, arch: Architecture, gpu_bytes: int, seq_length: int) -> RolloutShare:
    """GPUs the rollout servers take; refuses when one server's weights leave no room for one sequence."""
    r = config.rollout
    if rollout_gpus(config) == 0:
        return RolloutShare(
            engine=r.engine if not r.server_urls else f"{r.engine} (external servers)", num_gpus=0
        )
    options = r.sglang if r.engine == "sglang" else r.vllm
    key = "mem_fraction_static" if r.engine == "sglang" else "gpu_memory_utilization"
    fraction = float(options.get(key, DEFAULT_MEM_FRACTION[r.engine]))
    memory = estimate_rollout(
        arch, server_tp=r.server_tp, gpu_bytes=gpu_bytes, mem_fraction=fraction, dtype=config.model.dtype
    )
    if memory.kv_tokens < seq_length:
        share = (
            f"its {key} share ({fraction:g} × {gpu_bytes / GIB:g} GiB = {fraction * gpu_bytes / GIB:.1f} GiB)"
        )
        room = (
            f"leaving {memory.kv_pool / GIB:.2f} GiB of {share} for the KV cache: {memory.kv_tokens} tokens, "
            f"less than one {seq_length}-token trajectory"
            if memory.kv_pool > 0
            else f"more than {share}"
        )
        raise PlanRefused(
            f"rollout: one {r.engine} server GPU holds {memory.weights / GIB:.1f} GiB of weights at "
            f"rollout.server_tp={r.server_tp}, {room}; raise rollout.server_tp or rollout.{r.engine}.{key}, "
            "or use larger GPUs"
        )
    return RolloutShare(engine=r.engine, num_gpus=rollout_gpus(config), mem_fraction=fraction, memory=memory)


def make_plan(
    config: Config,
    arch: Architecture,
    *,
    num_gpus: int,
    gpu_gib: float,
    headroom: float = 0.1,
    head_chunk: int = 1024,
    flash_attention: bool = True,
) -> Plan:
    """The plan for `config` on `num_gpus` GPUs of `gpu_gib` GiB each.

    Raises:
        PlanRefused: the rollout servers or the trainer do not fit; the message names the shortfall.
    """
    if num_gpus < 1 or gpu_gib <= 0 or not 0 <= headroom < 1 or head_chunk < 1:
        raise PlanRefused(
            "need --gpus >= 1, --gpu-mem > 0, 0 <= --headroom < 1 and --head-chunk >= 1; got "
            f"{num_gpus}, {gpu_gib}, {headroom}, {head_chunk}"
        )
    gpu_bytes = int(gpu_gib * GIB)
    limit = int(gpu_bytes * (1 - headroom))
    seq_length = config.data.max_prompt_tokens + config.data.max_response_tokens
    rollout = rollout_share(config, arch, gpu_bytes, seq_length)
    trainer_gpus = num_gpus - rollout.num_gpus
    if trainer_gpus < 1:
        raise PlanRefused(
            f"the rollout servers take {rollout.num_gpus} GPUs (rollout.num_servers × rollout.server_tp) "
            f"of the {num_gpus} given, leaving none for the trainer; pass more --gpus or lower "
            "rollout.num_servers"
        )
    mini_batch = config.optimizer.mini_batch_size or config.rollout_batch_size
    work = Workload(
        micro_batch_size=config.parallel.micro_batch_size,
        seq_length=seq_length,
        num_microbatches=1,
        dtype=config.model.dtype,
        padded_vocab_multiple=config.model.padded_vocab_multiple,
        head_chunk=head_chunk,
        flash_attention=flash_attention,
        reference_model=config.algorithm.kl_coef > 0,
    )
    found = candidates(arch, trainer_gpus, mini_batch, work)
    if not found:
        raise PlanRefused(
            _no_valid_layout(arch, trainer_gpus, mini_batch, config.parallel.micro_batch_size, rollout)
        )
    wanted = recipe_layout(config)
    best = recommend(found, limit, wanted)
    if best is None:
        raise PlanRefused(_nothing_fits(arch, found, config, num_gpus, gpu_gib, limit, trainer_gpus))
    return Plan(
        arch=arch,
        num_gpus=num_gpus,
        gpu_bytes=gpu_bytes,
        limit=limit,
        rollout=rollout,
        trainer_gpus=trainer_gpus,
        mini_batch=mini_batch,
        workload=work,
        rows=per_parallel_size(found, limit, wanted),
        wanted=wanted,
        recipe=_recipe_candidate(config, arch, wanted, trainer_gpus, mini_batch, work),
        recommended=best,
    )


def _recipe_candidate(
    config: Config, arch: Architecture, wanted: Layout, trainer_gpus: int, mini_batch: int, work: Workload
) -> Candidate | None:
    dp = config.parallel.dp or trainer_gpus // (wanted.tp * wanted.pp)
    if (wanted.tp, wanted.pp, dp) not in set(
        valid_parallel_sizes(arch, trainer_gpus, mini_batch, work.micro_batch_size)
    ):
        return None
    layout = replace(wanted, dp=dp)
    work = replace(work, num_microbatches=mini_batch // (work.micro_batch_size * dp))
    return Candidate(layout, work, estimate(arch, layout, work))


def _no_valid_layout(
    arch: Architecture, gpus: int, mini_batch: int, micro_batch: int, rollout: RolloutShare
) -> str:
    fewer = [g for g in range(gpus - 1, 0, -1) if any(valid_parallel_sizes(arch, g, mini_batch, micro_batch))]
    hint = (
        f" ({fewer[0] + rollout.num_gpus} GPUs in all would give the trainer a valid {fewer[0]})"
        if fewer
        else ""
    )
    return (
        f"no trainer layout fits {gpus} GPUs: tp must divide the {arch.num_attention_heads} heads and "
        f"{arch.num_query_groups} KV groups (at most {MAX_TP}), pp must divide the {arch.num_layers} layers, "
        f"and the mini-batch of {mini_batch} trajectories must split into micro-batches of {micro_batch} "
        f"× dp; change --gpus{hint}, the rollout's GPU count, optimizer.mini_batch_size or "
        "parallel.micro_batch_size"
    )


def _nothing_fits(
    arch: Architecture,
    found: list[Candidate],
    config: Config,
    num_gpus: int,
    gpu_gib: float,
    limit: int,
    trainer_gpus: int,
) -> str:
    smallest = min(found, key=lambda c: c.memory.total)
    layout, need = smallest.layout, smallest.memory.total
    savers = [
        name
        for name, on in (
            ("sequence parallelism", layout.sequence_parallel),
            ("the distributed optimizer", layout.distributed_optimizer),
            ("full recompute", layout.recompute),
        )
        if on
    ]
    dtype = config.model.dtype
    static = arch.num_parameters() * (DTYPE_BYTES[dtype] + 4 + optimizer_bytes_per_param(dtype, 1, False))
    with_savers = ", ".join(savers[:-1]) + " and " + savers[-1] if len(savers) > 1 else "".join(savers)
    return (
        f"nothing fits on {num_gpus} × {gpu_gib:g} GiB ({trainer_gpus} for the trainer): "
        f"the smallest layout, {layout.name} with {with_savers or 'no memory savers'}, "
        f"needs {need / GIB:.1f} GiB per GPU, {(need - limit) / GIB:.1f} GiB over the "
        f"{limit / GIB:.1f} GiB limit. The weights, fp32 gradients and Adam states of "
        f"{arch.num_parameters() / 1e9:.2f} B parameters alone take {static / GIB:.0f} GiB, so the "
        f"trainer needs at least {math.ceil(static / limit)} GPUs of this size; use more or larger GPUs, "
        "or lower parallel.micro_batch_size or data.max_prompt_tokens + data.max_response_tokens"
    )
