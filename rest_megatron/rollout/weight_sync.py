"""Push the trainer's new weights to the inference servers after each optimizer step.

Two paths (docs/design.md §7):

**From disk** (default; works with every engine that has `/update_weights_from_disk`, on CPU too):
the trainer writes a Hugging Face folder (`rest_megatron.convert`'s writer), then every server loads
it. `DiskWeightSync` names the folders by step, pushes through a `Router` (so a server that is down
gets the weights when it returns), and deletes old folders.

**Distributed** (NCCL with SGLang and vLLM on GPU; gloo with the embedded engine and vLLM on CPU),
`rollout.weight_sync: distributed` (or `auto`): the trainer's rank 0 and every server's TP ranks form
one process group,

    rank 0            : the trainer (sender)
    ranks 1 .. tp_0   : server 0's TP ranks          (rank_offset 1)
    ranks 1+tp_0 ...  : server 1's TP ranks          (rank_offset 1 + tp_0), ...

joined through `/init_weights_update_group`. Then HF-named tensors, streamed from the sharded model
(gathered per tensor by the converter), are grouped into buckets of at most `bucket_bytes`; for each
bucket the trainer POSTs `/update_weights_from_distributed` {names, dtypes, shapes} to every server
and broadcasts the bucket's tensors in the same order. `flush_cache` rides on the last bucket only,
so the servers drop their KV cache once, after every tensor has arrived.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from rest_megatron.rollout.types import WeightSyncError


# ---- choice -------------------------------------------------------------------------------
def resolve_weight_sync(mode: str, engine: str, device: str = "cuda", *, own_servers: bool = True) -> str:
    """`rollout.weight_sync` made concrete: "disk" or "distributed".

    Every engine receives broadcast weights: SGLang natively, the embedded engine through the same
    endpoints over gloo (`engine/weights.py`), vLLM through our worker extension (`vllm_worker.py`).
    `auto` is `distributed` for servers the trainer starts itself (`own_servers`), and `disk` for
    servers it is given (`rollout.server_urls`, e.g. by `slurm/train.sbatch`): whether those can reach
    the trainer's rank 0 for a process group depends on the cluster's network, which the trainer cannot
    check before it would hang in the rendezvous; set `distributed` where it can. SGLang with a CPU
    trainer (`device`) is `disk` as well: SGLang broadcasts over NCCL only.
    """
    if mode not in ("disk", "distributed", "auto"):
        raise ValueError(f"rollout.weight_sync={mode!r}; use disk, distributed or auto")
    if engine not in ("embedded", "sglang", "vllm"):
        raise ValueError(f"unknown rollout engine {engine!r}; use embedded, sglang or vllm")
    if mode == "auto":
        return "disk" if not own_servers or (engine == "sglang" and device == "cpu") else "distributed"
    return mode


def weight_sync_backend(engine: str, device: str) -> str:
    """The weight-update group's backend: what the servers' side can receive on."""
    if engine == "embedded":
        return "gloo"
    if engine == "sglang":
        return "nccl"
    return "nccl" if device == "cuda" else "gloo"  # vLLM's CPU build has no NCCL


# ---- disk ---------------------------------------------------------------------------------
class DiskWeightSync:
    """Step-numbered HF folders under `root`, pushed to every server; keeps the last `num_keep` folders."""

    def __init__(self, client: Any, root: str | Path, *, num_keep: int = 2) -> None:
        if num_keep < 1:
            raise ValueError("num_keep must be >= 1: the servers read the newest folder while they load it")
        self.client = client
        self.root = Path(root)
        self.num_keep = num_keep

    def folder(self, step: int) -> Path:
        """Where the trainer writes the HF export of `step` (then calls `push(step)`)."""
        return self.root / f"step-{step:08d}"

    async def push(self, step: int) -> Path:
        """Make every server load step `step`'s folder; prune older folders. Returns the folder."""
        folder = self.folder(step)
        if not (folder / "config.json").is_file():
            raise WeightSyncError(
                f"{folder} holds no HF export (no config.json); export the weights before pushing"
            )
        await self.client.update_weights_from_disk(str(folder), str(step))
        for old in sorted(p for p in self.root.glob("step-*") if p.is_dir())[: -self.num_keep]:
            shutil.rmtree(old, ignore_errors=True)
        return folder


async def update_all_from_disk(
    clients: Sequence[Any], model_path: str, weight_version: str | None = None
) -> None:
    """`/update_weights_from_disk` on every server at once; WeightSyncError lists the ones that failed."""
    results = await asyncio.gather(
        *(c.update_weights_from_disk(model_path, weight_version) for c in clients), return_exceptions=True
    )
    failures = [f"{c.base_url}: {r}" for c, r in zip(clients, results) if isinstance(r, BaseException)]
    if failures:
        raise WeightSyncError(
            f"{len(failures)} of {len(clients)} server(s) did not load {model_path}: " + "; ".join(failures)
        )


# ---- naming ---------------------------------------------------------------------------------
def hf_weight_names(model_dir: str | Path) -> set[str]:
    """Tensor names of a HF folder's safetensors files (read from the headers; no tensor is loaded)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for path in sorted(model_dir.glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            names.update(k for k in json.loads(f.read(length)) if k != "__metadata__")
    if not names:
        raise ValueError(f"{model_dir} has no safetensors weights")
    return names


def check_names(sent: Iterable[str], expected: set[str]) -> None:
    """Raise ValueError if the streamed names are not exactly the served model's parameter names."""
    sent = list(sent)
    duplicates = sorted({n for n in sent if sent.count(n) > 1})
    unknown = sorted(set(sent) - expected)
    missing = sorted(expected - set(sent))
    if duplicates or unknown or missing:
        raise ValueError(
            f"weight names do not match the served model: duplicates {duplicates[:5]}, unknown "
            f"{unknown[:5]}, missing {missing[:5]}; fix the Megatron->HF name map in rest_megatron.convert"
        )


# ---- buckets --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorMeta:
    """Name, dtype and shape of one HF tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty((), dtype=self.dtype).element_size()

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> TensorMeta:
        return cls(name, tensor.dtype, tuple(tensor.shape))


def plan_buckets(metas: Sequence[TensorMeta], bucket_bytes: int) -> list[list[TensorMeta]]:
    """Split `metas` in order into buckets of at most `bucket_bytes` (a larger tensor is alone)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    buckets: list[list[TensorMeta]] = []
    size = 0
    for meta in metas:
        if not buckets or (buckets[-1] and size + meta.nbytes > bucket_bytes):
            buckets.append([])
            size = 0
        buckets[-1].append(meta)
        size += meta.nbytes
    return buckets


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The streaming form of `plan_buckets`: holds at most one bucket of tensors at a time."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def dtype_name(dtype: torch.dtype) -> str:
    """SGLang's dtype spelling: `torch.bfloat16` -> "bfloat16" (it does getattr(torch, name))."""
    return str(dtype).removeprefix("torch.")


def bucket_payload(
    metas: Sequence[TensorMeta], *, group_name: str, flush_cache: bool, weight_version: str | None = None
) -> dict[str, Any]:
    """The `/update_weights_from_distributed` body announcing one bucket."""
    payload: dict[str, Any] = {
        "names": [m.name for m in metas],
        "dtypes": [dtype_name(m.dtype) for m in metas],
        "shapes": [list(m.shape) for m in metas],
        "group_name": group_name,
        "flush_cache": flush_cache,
    }
    if weight_version is not None:
        payload["weight_version"] = weight_version
    return payload


def group_layout(server_tps: Sequence[int]) -> tuple[int, list[int]]:
    """(world size, rank offset of each server) of the weight-update group; the trainer is rank 0."""
    if not server_tps or any(tp < 1 for tp in server_tps):
        raise ValueError(f"every server needs a TP size >= 1, got {list(server_tps)}")
    offsets, next_rank = [], 1
    for tp in server_tps:
        offsets.append(next_rank)
        next_rank += tp
    return next_rank, offsets


# ---- NCCL -----------------------------------------------------------------------------------
def init_custom_process_group(
    *, backend: str, init_method: str, world_size: int, rank: int, group_name: str, timeout_s: float = 600.0
) -> Any:
    """A process group outside the trainer's default world (the same construction SGLang uses on its
    side of `/init_weights_update_group`, so both ends meet in one TCP store)."""
    from torch.distributed import distributed_c10d as c10d

    timeout = timedelta(seconds=timeout_s)
    store, rank, world_size = next(c10d.rendezvous(init_method, rank, world_size, timeout=timeout))
    store.set_timeout(timeout)
    store = c10d.PrefixStore(group_name, store)
    group, _ = c10d._new_process_group_helper(  # noqa: SLF001 - no public API for a group outside the world
        world_size, rank, [], c10d.Backend(backend), store, group_name=group_name, timeout=timeout
    )
    c10d._world.pg_group_ranks[group] = {i: i for i in range(world_size)}  # noqa: SLF001
    return group


class DistributedWeightSync:
    """The trainer (rank 0) side of distributed weight sync: SGLang, the embedded engine, vLLM."""

    def __init__(
        self,
        clients: Sequence[Any],
        server_tps: Sequence[int],
        *,
        master_address: str,
        master_port: int,
        group_name: str = "rest_megatron_weights",
        bucket_bytes: int = 512 << 20,
        backend: str = "nccl",
        device: str | torch.device = "cuda",
    ) -> None:
        if len(clients) != len(server_tps):
            raise ValueError(f"{len(clients)} servers but {len(server_tps)} TP sizes")
        self.clients = list(clients)
        self.world_size, self.rank_offsets = group_layout(server_tps)
        self.master_address, self.master_port = master_address, master_port
        self.group_name, self.bucket_bytes, self.backend = group_name, bucket_bytes, backend
        self.device = torch.device(device)
        self.group: Any = None

    async def init_group(self) -> None:
        """Every server and the trainer join the group (they rendezvous, so all calls run at once)."""
        joins = [
            c.init_weights_update_group(
                master_address=self.master_address,
                master_port=self.master_port,
                rank_offset=offset,
                world_size=self.world_size,
                group_name=self.group_name,
                backend=self.backend,
            )
            for c, offset in zip(self.clients, self.rank_offsets)
        ]
        trainer = asyncio.to_thread(
            init_custom_process_group,
            backend=self.backend,
            world_size=self.world_size,
            init_method=f"tcp://{self.master_address}:{self.master_port}",
            rank=0,
            group_name=self.group_name,
        )
        results = await asyncio.gather(trainer, *joins, return_exceptions=True)
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            raise WeightSyncError("joining the weight-update group failed: " + "; ".join(failures))
        self.group = results[0]

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            torch.distributed.broadcast(tensor.to(self.device).contiguous(), src=0, group=self.group)

    async def push(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], weight_version: str | None = None
    ) -> int:
        """Stream HF-named tensors to every server, bucket by bucket; returns the number of buckets."""
        if self.group is None:
            raise WeightSyncError("call init_group() before push()")
        buckets = iter_buckets(named_tensors, self.bucket_bytes)
        bucket = next(buckets, None)
        count = 0
        while bucket is not None:
            following = next(buckets, None)
            metas = [TensorMeta.of(name, tensor) for name, tensor in bucket]
            payload = bucket_payload(
                metas,
                group_name=self.group_name,
                flush_cache=following is None,
                weight_version=weight_version,
            )
            receives = asyncio.gather(
                *(c.update_weights_from_distributed(payload) for c in self.clients), return_exceptions=True
            )
            await asyncio.to_thread(self._broadcast, [tensor for _, tensor in bucket])
            failures = [
                f"{c.base_url}: {r}"
                for c, r in zip(self.clients, await receives)
                if isinstance(r, BaseException)
            ]
            if failures:
                raise WeightSyncError(f"bucket {count} ({len(metas)} tensors) failed: " + "; ".join(failures))
            bucket, count = following, count + 1
        return count
