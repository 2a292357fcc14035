"""This rank's rectangles of Megatron's global tensors, read off `GPTModel.sharded_state_dict()`.

Megatron states its own sharding there: each `ShardedTensor` has the layout-independent key, the
global shape and this rank's offset in it, with layers stacked along a leading axis. Reading the
layout from Megatron, instead of re-deriving TP/PP partitioning here, keeps import, the live
weight gather and the checkpoint (which is written from the same description) in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory, is_main_replica
from megatron.core.utils import unwrap_model


@dataclass(frozen=True)
class Piece:
    """One rank-local rectangle of a global tensor (for layered keys: of one layer's tensor)."""

    key: str
    """The sharded-state-dict key, e.g. `decoder.layers.mlp.linear_fc1.weight`."""
    layer: int | None
    """Global layer index for per-layer keys, else None."""
    offset: tuple[int, ...]
    """Where `data` starts in the global tensor (without the layer axis)."""
    global_shape: tuple[int, ...]
    """The global tensor's shape (without the layer axis)."""
    main: bool
    """Whether this rank holds the main replica (exactly one rank does for every rectangle)."""
    data: torch.Tensor
    """A view of the parameter itself: writing to it writes the model."""

    def region(self) -> tuple[slice, ...]:
        """Index of this rectangle inside the global tensor."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.data.shape))


def local_pieces(model: torch.nn.Module) -> list[Piece]:
    """Every tensor rectangle of this rank's model chunk, in state-dict order.

    `model` is the GPTModel or any Megatron wrapper around it (DDP, Float16Module).
    """
    pieces: list[Piece] = []
    pending = list(unwrap_model(model).sharded_state_dict().values())
    while pending:
        item = pending.pop(0)
        if isinstance(item, ShardedTensorFactory):
            # fc1's swiglu factory splits the local [gate; up] rows into two rectangles (views).
            built = item.build()
            pending[:0] = (
                list(built.values())
                if isinstance(built, dict)
                else list(built)
                if isinstance(built, list)
                else [built]
            )
            continue
        if not isinstance(item, ShardedTensor):
            continue  # ShardedObjects (Transformer Engine's _extra_state) hold no weights
        assert item.flattened_range is None, (
            f"{item.key}: flattened shards belong to the optimizer, not the model"
        )
        layered = item.prepend_axis_num == 1
        assert item.prepend_axis_num in (0, 1), item
        pieces.append(
            Piece(
                key=item.key,
                layer=item.global_offset[0] if layered else None,
                offset=tuple(item.global_offset[item.prepend_axis_num :]),
                global_shape=tuple(item.global_shape[item.prepend_axis_num :]),
                main=is_main_replica(item.replica_id),
                data=item.data,
            )
        )
    return pieces
