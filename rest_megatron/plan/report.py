"""A `Plan` as the text `rest-megatron plan` prints: a summary, one table row per layout, the advice."""

from __future__ import annotations

from dataclasses import replace

from rest_megatron.plan.memory import GIB, estimate, head_bytes
from rest_megatron.plan.planner import Plan
from rest_megatron.plan.search import Candidate

_COLUMNS = ("layout", "SP", "DO", "RC", "params", "grads", "optim", "activ", "head", "ref", "total", "")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def _count(n: int) -> str:
    """1.72 B, 0.84 M: parameter counts readable at any size."""
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _row(c: Candidate, limit: int, notes: list[str]) -> list[str]:
    m, layout = c.memory, c.layout
    verdict = "fits" if c.fits(limit) else f"over by {_gib(m.total - limit)}"
    return [
        layout.name,
        "SP" if layout.sequence_parallel else "-",
        "DO" if layout.distributed_optimizer else "-",
        "RC" if layout.recompute else "-",
        _gib(m.parameters),
        _gib(m.gradients),
        _gib(m.optimizer),
        _gib(m.activations),
        _gib(m.head),
        _gib(m.reference),
        _gib(m.total),
        "  ".join([verdict, *notes]),
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(widths))]
        lines.append(("  ".join(cells) + "   " + r[-1]).rstrip())
    return lines


def _overrides(c: Candidate) -> str:
    layout = c.layout
    return (
        f"parallel.tp={layout.tp} parallel.pp={layout.pp} "
        f"parallel.sequence_parallel={str(layout.sequence_parallel).lower()} "
        f"parallel.use_distributed_optimizer={str(layout.distributed_optimizer).lower()} "
        f"model.recompute_activations={str(layout.recompute).lower()}"
    )


def format_plan(plan: Plan, *, recipe_path: str, model_source: str, model_name: str) -> str:
    """The report; every number is GiB (2^30 bytes) per GPU."""
    a, w, r = plan.arch, plan.workload, plan.rollout
    lines = [
        f"plan for {recipe_path} on {_gpus(plan.num_gpus)} × {plan.gpu_bytes / GIB:g} GiB",
        f"model    {model_name} from {model_source}",
        f"         {_count(a.num_parameters())} parameters: {a.num_layers} layers, hidden {a.hidden_size}, "
        f"FFN {a.ffn_hidden_size}, {a.num_attention_heads} heads / "
        f"{a.num_query_groups} KV groups × {a.head_dim}, "
        f"vocab {a.vocab_size}, {'tied' if a.tie_word_embeddings else 'untied'} embeddings",
        f"batch    micro-batches of {w.micro_batch_size} × {w.seq_length} tokens in {w.dtype}; "
        f"{plan.mini_batch} trajectories per optimizer update",
    ]
    if r.memory is None:
        lines.append(f"rollout  {r.engine}: takes none of these GPUs")
    else:
        m = r.memory
        per_traj = m.kv_tokens // w.seq_length
        lines += [
            f"rollout  {r.engine} on {_gpus(r.num_gpus)} of their own (num_servers × server_tp); "
            "per server GPU: "
            f"weights {_gib(m.weights)} GiB, KV cache {m.kv_bytes_per_token // 1024} KiB/token,",
            f"         at memory fraction {r.mem_fraction:g} {m.kv_tokens:,} tokens = "
            f"{per_traj} trajectories of "
            f"{w.seq_length} at once",
        ]
    headroom = 1 - plan.limit / plan.gpu_bytes
    lines += [
        f"trainer  {_gpus(plan.trainer_gpus)}; limit {_gib(plan.limit)} GiB per GPU "
        f"({plan.gpu_bytes / GIB:g} GiB less {headroom:.0%} headroom)",
        "",
        "GiB per GPU on the fullest pipeline stage. SP sequence parallel, DO distributed optimizer, "
        "RC full recompute,",
        "ref the frozen reference policy (algorithm.kl_coef > 0)",
    ]
    rows, recipe_shown = [list(_COLUMNS)], False
    for c in plan.rows:
        notes = []
        if plan.recipe is not None and c.layout == plan.recipe.layout:
            notes.append("recipe")
            recipe_shown = True
        if c.layout == plan.recommended.layout:
            notes.append("recommended")
        rows.append(_row(c, plan.limit, notes))
    if plan.recipe is not None and not recipe_shown:
        rows.insert(1, _row(plan.recipe, plan.limit, ["recipe"]))
    lines += _table(rows)
    best = plan.recommended
    full = head_bytes(a, best.layout, best.workload, fused=False)
    fused = head_bytes(a, best.layout, best.workload, fused=True)
    tokens = w.micro_batch_size * w.seq_length

    def variant(distributed: bool, recompute: bool):
        layout = replace(best.layout, distributed_optimizer=distributed, recompute=recompute)
        return estimate(a, layout, best.workload)

    plain, sharded, recomputed = variant(False, False), variant(True, False), variant(False, True)
    lines += [
        "",
        f"savers at {best.layout.name}: optimizer {_gib(plain.optimizer)} GiB without, "
        f"{_gib(sharded.optimizer)} "
        f"GiB with the distributed optimizer; activations {_gib(plain.activations)} GiB without, "
        f"{_gib(recomputed.activations)} GiB with full recompute",
        f"output head: fused, {min(w.head_chunk, tokens)}-row chunks: {_gib(fused)} GiB; unfused logits "
        f"[{tokens}, V/TP] in {w.dtype} + fp32 would take {_gib(full)} GiB",
    ]
    if plan.recipe is None:
        wanted = plan.wanted
        lines.append(
            f"the recipe's layout (tp{wanted.tp} pp{wanted.pp}, dp {wanted.dp or 'derived'}) does not split "
            f"{plan.trainer_gpus} trainer GPUs and the mini-batch of {plan.mini_batch} evenly"
        )
    if plan.recipe is not None and plan.recipe.layout == best.layout:
        lines.append(f"recommended: {best.layout.name}, the recipe's layout")
    else:
        lines.append(f"recommended: {best.layout.name}; set {_overrides(best)}")
    return "\n".join(lines)
