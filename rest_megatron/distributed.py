"""Process-group setup: torch.distributed plus Megatron's model-parallel state, on CPU or GPU.

One entry point, `init_distributed`, used by the trainer, the demo, the benchmarks and the test
harness. On a host without CUDA it picks gloo and installs the CPU shims of `model/cpu_shims.py`;
with CUDA it picks NCCL and binds the local GPU. `init_model_parallel` (re)builds Megatron's
TP/PP/DP groups on an already-initialized world, so one set of processes can run several layouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from rest_megatron.model.cpu_shims import apply_cpu_shims, install_cpu_rng_tracker


@dataclass(frozen=True)
class ParallelLayout:
    """The sizes of one model-parallel layout; DP is what remains of the world."""

    tp: int = 1
    pp: int = 1

    def dp(self, world_size: int) -> int:
        """Data-parallel size for `world_size` ranks; raises if the layout does not divide it."""
        if world_size % (self.tp * self.pp):
            raise ValueError(
                f"world size {world_size} is not divisible by TP×PP = {self.tp}×{self.pp}; "
                f"launch a multiple of {self.tp * self.pp} ranks or change parallel.tp/parallel.pp"
            )
        return world_size // (self.tp * self.pp)


_compute_device: torch.device | None = None
"""What `init_distributed` chose for this process; `compute_device()` hands it out."""


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → cuda when available, else cpu. Asking for cuda without a GPU is a user error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("launch.device=cuda but torch sees no GPU; use launch.device=cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"launch.device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def init_distributed(
    *,
    backend: str = "auto",
    device: str = "auto",
    timeout_s: float = 600.0,
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str | None = None,
) -> torch.device:
    """Initialize torch.distributed for this process (idempotent) and return its compute device.

    Rank, world size and the rendezvous come from torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK) unless given. Every collective times out after
    `timeout_s`, so a hang surfaces as an error instead of a stalled job.
    """
    compute_device = resolve_device(device)
    if compute_device.type == "cpu":
        apply_cpu_shims()
    else:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        compute_device = torch.device("cuda", torch.cuda.current_device())
    if backend == "auto":
        backend = "nccl" if compute_device.type == "cuda" else "gloo"
    if backend == "nccl" and compute_device.type != "cuda":
        raise ValueError(
            "the nccl backend serves only CUDA tensors but the device is cpu; use backend gloo (or auto)"
        )
    global _compute_device
    _compute_device = compute_device
    if not dist.is_initialized():
        size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        rendezvous: dict = {"init_method": init_method}
        if init_method is None and "MASTER_ADDR" not in os.environ and size == 1:
            # A lone process outside torchrun: an in-process store, so no port to pick (and lose to
            # another process between picking and binding).
            rendezvous = {"store": dist.HashStore()}
        dist.init_process_group(
            backend=backend,
            rank=rank if rank is not None else int(os.environ.get("RANK", 0)),
            world_size=size,
            timeout=timedelta(seconds=timeout_s),
            **rendezvous,
        )
    return compute_device


def destroy_model_parallel() -> None:
    """Forget Megatron's TP/PP/DP groups and free them.

    Megatron's own `destroy_model_parallel` only drops its references (and a few gloo side groups):
    each gloo group keeps its worker threads, ~50 per layout and rank, busy-polling. A long-lived
    process that switches layouts (the test harness) would pile up thousands of threads and burn
    half a core per rank while idle.
    """
    groups = [group for group in parallel_state._global_process_group_list or [] if group is not None]
    parallel_state.destroy_model_parallel()
    live = dist.distributed_c10d._world.pg_map
    for group in groups:
        if group in live and group is not dist.GroupMember.WORLD:
            dist.destroy_process_group(group)


def compute_device() -> torch.device:
    """The device this process computes and communicates on: the one `init_distributed` chose.

    Model inputs, losses and every tensor in a collective of the trainer live here (NCCL serves only
    CUDA tensors). Before `init_distributed` it is what `resolve_device("auto")` would pick.
    """
    return _compute_device if _compute_device is not None else resolve_device("auto")


def init_model_parallel(layout: ParallelLayout, *, seed: int = 1234, timeout_s: float | None = None) -> None:
    """(Re)build Megatron's TP/PP/DP groups for `layout` on the initialized world and seed its RNGs.

    Destroys any previous model-parallel state first, so a long-lived process (the test harness)
    can switch layouts. The seed gives every DP replica the same weights and every TP rank its own
    dropout stream, as Megatron's `model_parallel_cuda_manual_seed` does.
    """
    if not dist.is_initialized():
        raise RuntimeError("call init_distributed() before init_model_parallel()")
    layout.dp(dist.get_world_size())
    destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
    )
    if timeout_s is not None:
        parallel_state.update_pg_timeout(timedelta(seconds=timeout_s))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        model_parallel_cuda_manual_seed(seed, force_reset_rng=True)
    else:
        install_cpu_rng_tracker(seed)
