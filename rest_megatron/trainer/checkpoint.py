"""Atomic, verified, layout-independent training checkpoints.

Layout of a checkpoint root:

    root/
      latest                 the name of the newest complete checkpoint (replaced atomically)
      step_00000004/
        model_optim/         Megatron distributed checkpoint (torch_dist): model + optimizer,
                             loadable at any TP/PP layout
        trainer_state.pt     step, data cursor, LR-scheduler state, anything else the loop keeps
        rng/rank_00000.pt    each rank's RNG states (restored only when the world size matches)
        manifest.json        size and sha256 of every file above, written last

A save goes to `root/.tmp-step_…` and is renamed into place only after every rank finished and the
manifest is written, so a crash never leaves a half checkpoint under a real name. Loading verifies
the manifest first; a missing or truncated file is reported by name, and with `fallback=True` the
loader moves on to the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

from rest_megatron.distributed import compute_device
from rest_megatron.trainer.optimizer import unwrap_ddp

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message names the file and what to do."""


def _start_writer_results_queue() -> None:
    """Start Megatron's checkpoint-writer results queue with SIGTERM ignored.

    The writer keeps one *spawned* manager process for that queue, created at the first save and kept.
    Slurm preemption (`scancel -s TERM`) signals every process of the job step, and that manager would
    die of it, so the checkpoint the trainer then saves fails with a broken pipe. A spawned process
    keeps an ignored disposition across exec, so starting it under SIG_IGN makes it outlive the signal;
    it still stops at exit, when its owner tells it to shut down.
    """
    if getattr(filesystem_async, "_results_queue", True) is not None:  # started already (or not this version)
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        filesystem_async._get_write_results_queue()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _step_name(step: int) -> str:
    return f"step_{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    state["megatron_tracker"] = get_cuda_rng_tracker().get_states()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["megatron_tracker"])


def _optimizer_has_state(optimizer: MegatronOptimizer) -> bool:
    """Whether any rank's optimizer holds state (Adam moments exist only after the first step)."""
    parts = getattr(optimizer, "chained_optimizers", [optimizer])
    local = any(len(getattr(part, "optimizer", part).state) > 0 for part in parts)
    flag = torch.tensor([float(local)], device=compute_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _sharded_state(
    model: torch.nn.Module, optimizer: MegatronOptimizer | None, *, is_loading: bool
) -> dict[str, Any]:
    model_state = unwrap_ddp(model).sharded_state_dict()
    state = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(model_state, is_loading=is_loading)
    return state


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: MegatronOptimizer | None = None,
    scheduler: OptimizerParamScheduler | None = None,
    trainer_state: dict[str, Any] | None = None,
    *,
    num_keep_last: int = 0,
) -> Path:
    """Save a checkpoint of `step` under `root` on every rank (collective); returns its directory."""
    root = Path(root)
    final, tmp = root / _step_name(step), root / f".tmp-{_step_name(step)}"
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "model_optim").mkdir(parents=True)
        (tmp / "rng").mkdir()
    dist.barrier()
    _start_writer_results_queue()
    # Before its first step an optimizer has no state to save, and a loader would expect Adam moments.
    with_optimizer = optimizer is not None and _optimizer_has_state(optimizer)
    dist_checkpointing.save(
        _sharded_state(model, optimizer if with_optimizer else None, is_loading=False),
        str(tmp / "model_optim"),
    )
    torch.save(_rng_state(), tmp / "rng" / f"rank_{rank:05d}.pt")
    if rank == 0:
        state = {
            "step": step,
            "world_size": dist.get_world_size(),
            "optimizer_saved": with_optimizer,
            **(trainer_state or {}),
        }
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
    dist.barrier()
    if rank == 0:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = root / ".latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / "latest")
        if num_keep_last > 0:
            for old in list_checkpoints(root)[:-num_keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete-looking checkpoint directories under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify_checkpoint(directory: str | Path) -> None:
    """Check every file against the manifest; raise CheckpointError naming the first bad file."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{manifest_path} is missing: {directory} is incomplete (interrupted save?); "
            "delete it or load an earlier checkpoint"
        )
    files = json.loads(manifest_path.read_text())["files"]
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing from checkpoint {directory}; load an earlier checkpoint"
            )
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(
                f"{path} has {size} bytes, the manifest says {expected['bytes']}: the file is truncated or "
                "was overwritten; load an earlier checkpoint"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path} does not match its sha256 in {manifest_path}: the file is corrupt")


def _candidates(path: Path) -> list[Path]:
    """Checkpoints to try, newest first: `path` itself when it is one, else the root's."""
    if (path / MANIFEST).exists() or path.name.startswith("step_"):
        return [path]
    ordered = list(reversed(list_checkpoints(path)))
    latest = path / "latest"
    if latest.is_file():
        named = path / latest.read_text().strip()
        ordered = [named] + [p for p in ordered if p != named]
    return ordered


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: MegatronOptimizer | None = None,
    scheduler: OptimizerParamScheduler | None = None,
    *,
    fallback: bool = False,
) -> dict[str, Any]:
    """Load the newest good checkpoint from a root (or one checkpoint directory) on every rank.

    Returns the trainer state (step, data cursor, ...) plus `checkpoint_dir` and `skipped`, the
    checkpoints that failed verification when `fallback` let the loader move past them.
    """
    candidates = _candidates(Path(path))
    if not candidates:
        raise CheckpointError(f"no checkpoint under {path}; start without checkpoint.resume or fix the path")
    skipped: list[str] = []
    for directory in candidates:
        # Rank 0 verifies; every rank learns the verdict, so all ranks load the same checkpoint.
        verdict = [None]
        if dist.get_rank() == 0:
            try:
                verify_checkpoint(directory)
            except CheckpointError as error:
                verdict[0] = str(error)
        dist.broadcast_object_list(verdict, src=0)
        if verdict[0] is None:
            break
        if not fallback:
            raise CheckpointError(verdict[0])
        skipped.append(verdict[0])
    else:
        raise CheckpointError("every checkpoint failed verification:\n" + "\n".join(skipped))

    state = torch.load(directory / "trainer_state.pt", weights_only=False)
    # Saved before the first update: the optimizer stays fresh, but its fp32 main params (bf16/fp16)
    # must follow the loaded model, or its first step writes back the weights it was built with.
    with_optimizer = optimizer is not None and state.get("optimizer_saved", True)
    loaded = dist_checkpointing.load(
        _sharded_state(model, optimizer if with_optimizer else None, is_loading=True),
        str(directory / "model_optim"),
    )
    unwrap_ddp(model).load_state_dict(loaded["model"])
    if with_optimizer:
        optimizer.load_state_dict(loaded["optimizer"])
    elif optimizer is not None:
        optimizer.reload_model_params()
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    rng_file = directory / "rng" / f"rank_{dist.get_rank():05d}.pt"
    if state.get("world_size") == dist.get_world_size() and rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    state.update(checkpoint_dir=str(directory), skipped=skipped)
    return state
