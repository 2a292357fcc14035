"""Full Hugging-Face-named tensors, one at a time, from a live TP/PP-sharded Megatron model.

For weight sync to the rollout servers: every rank calls

    for name, tensor in iter_hf_tensors(model, spec):  # this rank's GPTModel (or its DDP wrapper)
        push(name, tensor)                            # runs on `dst` only

and `dst` (global rank 0 by default) receives the tensors in Hugging Face order, one Megatron
tensor at a time (one layer's tensor, not the whole stack), so it never holds more than that plus
what the consumer keeps. Elsewhere the generator yields nothing; it must still be run to the end
on every rank, because it is collective.

How: each rank lists the rectangles it holds as main replica (`pieces.local_pieces`: TP shards,
its PP stage's layers; DP replicas and the tied output copy are not main). Rank `dst` learns
everyone's list once (all_gather_object), then for each Megatron tensor in Hugging Face order the
holders send their rectangles to `dst` (point-to-point, so it works with gloo and NCCL), which
assembles the global tensor and cuts it into Hugging Face tensors with the same `mapping` that
`to-hf` uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist

from rest_megatron.convert.adapters import get_adapter
from rest_megatron.convert.mapping import dims, split_global, units
from rest_megatron.convert.pieces import local_pieces
from rest_megatron.model.builder import ModelSpec


@torch.no_grad()
def iter_hf_tensors(
    model: torch.nn.Module, spec: ModelSpec, *, dst: int = 0, group: dist.ProcessGroup | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, full tensor) on global rank `dst`; collective over `group` (default: world).

    Tensors come in the model's dtype, on `dst`'s parameter device.
    """
    adapter = get_adapter(spec)
    rank = dist.get_rank()
    mine = [p for p in local_pieces(model) if p.main]
    listing = [(p.key, p.layer, p.offset, tuple(p.data.shape), p.global_shape, p.data.dtype) for p in mine]
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, listing, group=group)
    ranks = dist.get_process_group_ranks(group) if group is not None else list(range(dist.get_world_size()))
    holders: dict[tuple, list] = {}
    for src, entries in zip(ranks, everyone):
        for key, layer, offset, shape, global_shape, dtype in entries:
            holders.setdefault((key, layer), []).append((src, offset, shape, global_shape, dtype))
    local = {(p.key, p.layer, p.offset): p.data for p in mine}
    device = next(model.parameters()).device
    d = dims(spec)
    for unit in units(adapter.rules(spec), spec.num_layers):
        for rule in unit.rules:
            parts = holders.get((rule.megatron_key(), unit.layer))
            if not parts:
                raise RuntimeError(
                    f"no rank holds Megatron tensor {rule.megatron_key()} (layer {unit.layer})"
                )
            global_shape, dtype = parts[0][3], parts[0][4]
            full = torch.empty(global_shape, dtype=dtype, device=device) if rank == dst else None
            covered = 0
            for src, offset, shape, _, _ in parts:
                region = tuple(slice(o, o + n) for o, n in zip(offset, shape))
                if rank == src == dst:
                    full[region] = local[(rule.megatron_key(), unit.layer, offset)]
                elif rank == src:
                    dist.send(local[(rule.megatron_key(), unit.layer, offset)].contiguous(), dst, group=group)
                elif rank == dst:
                    buffer = torch.empty(shape, dtype=dtype, device=device)
                    dist.recv(buffer, src, group=group)
                    full[region] = buffer
                covered += int(torch.Size(shape).numel())
            assert covered == torch.Size(global_shape).numel(), (rule.megatron_key(), unit.layer, covered)
            if rank == dst:
                yield from split_global(rule.blocks(d, global_shape[0], unit.layer), full).items()
