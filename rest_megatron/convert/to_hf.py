"""Megatron distributed checkpoint (any TP/PP, with or without optimizer state) -> Hugging Face folder.

Streams: for each unit in Hugging Face order (the embedding, one layer, the head) it loads just
that layer's slice of the stacked global tensors from the torch_dist checkpoint
(`dist_checkpointing.load` of a one-layer `ShardedTensor`), cuts them into Hugging Face tensors
with the family adapter's map (the same one `from-hf` and `live.iter_hf_tensors` use), and
appends them to the current safetensors shard, which is written once it reaches the size limit.
Memory is one shard plus one layer.

Output: `model-0000i-of-0000N.safetensors`, `model.safetensors.index.json`, `config.json`
(the source config with the export dtype), `generation_config.json` and the tokenizer files, all
taken from the checkpoint's `hf_source` (see `from_hf.py`) or from `--hf-source`. The folder is
written under a temporary name and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedTensor
from safetensors.torch import save_file

from rest_megatron.convert.adapters import Adapter
from rest_megatron.convert.from_hf import DTYPES, HF_SOURCE_DIR
from rest_megatron.convert.hf_files import INDEX, check_empty_output, copy_metadata, read_config
from rest_megatron.convert.mapping import Rule, Unit, describe, dims, split_global, units
from rest_megatron.model.builder import ModelSpec

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """'5GB' (decimal, as Hugging Face counts), '512MiB' or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"--max-shard-size {text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def locate_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or the root's `latest` (else its newest step)."""
    from rest_megatron.trainer.checkpoint import MANIFEST, list_checkpoints, verify_checkpoint

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"--ckpt {path} does not exist; pass a checkpoint root or a step_XXXXXXXX directory")
    if (path / MANIFEST).is_file() or (path / "model_optim").is_dir():
        directory = path
    elif (path / "latest").is_file():
        directory = path / (path / "latest").read_text().strip()
    elif list_checkpoints(path):
        directory = list_checkpoints(path)[-1]
    else:
        raise ValueError(
            f"--ckpt {path} holds no checkpoint (no step_* directory); pass the run's checkpoint root"
        )
    verify_checkpoint(directory)  # CheckpointError names a missing or truncated file
    return directory


def locate_hf_source(directory: Path, trainer_state: dict[str, Any], override: str | Path | None) -> Path:
    """The folder with the config and tokenizer of the model the checkpoint came from."""
    if override is not None:
        return Path(override)
    record = trainer_state.get("hf_source") or {}
    candidates = [directory / HF_SOURCE_DIR, directory.parent / HF_SOURCE_DIR]
    if record.get("dir"):
        candidates += [directory / record["dir"], directory.parent / record["dir"]]
    if record.get("origin"):
        candidates.append(Path(record["origin"]))
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise ValueError(
        f"{directory} does not say which Hugging Face model it came from (no config.json in "
        f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); pass --hf-source DIR, the Hugging Face "
        "folder the run started from"
    )


class ShardWriter:
    """Safetensors shards of at most `max_bytes` (one bigger tensor gets a shard to itself) + index."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        save_file(
            self.pending,
            str(self.directory / f"part-{len(self.parts):05d}.safetensors"),
            metadata={"format": "pt"},
        )
        self.parts.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, give the shards their final names, write the index; returns file names."""
        if self.pending:
            self._flush()
        count, weight_map, names = len(self.parts), {}, []
        for i, tensor_names in enumerate(self.parts):
            name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.replace(self.directory / f"part-{i:05d}.safetensors", self.directory / name)
            weight_map.update(dict.fromkeys(tensor_names, name))
            names.append(name)
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return names


def _check_metadata(metadata: dict[str, Any], rules: list[Rule], spec: ModelSpec, source: Path) -> None:
    """The checkpoint has every tensor the config implies, with the implied shape."""
    d = dims(spec)
    facts = ", ".join(f"{k}={v}" for k, v in describe(spec).items())
    for rule in rules:
        key = rule.megatron_key()
        if key not in metadata:
            raise ValueError(
                f"the checkpoint has no tensor {key}, which {source / 'config.json'} ({facts}) implies: "
                "the config does not belong to this checkpoint; "
                "pass --hf-source with the model the run started from"
            )
        shape = tuple(metadata[key].global_shape)
        sample = next(iter(rule.hf_shapes(d, 0 if rule.layered else None).values()))
        rows = rule.megatron_rows(d)
        expected = (
            ((spec.num_layers,) if rule.layered else ())
            + (rows if rows is not None else shape[-2],)
            + sample[1:]
        )
        if shape != expected or (rows is None and shape[-2] < spec.vocab_size):
            raise ValueError(
                f"checkpoint tensor {key} has shape {list(shape)} "
                f"but {source / 'config.json'} ({facts}) implies "
                f"{list(expected)}: the config does not belong to this checkpoint; pass --hf-source with the "
                "model the run started from"
            )


def _load_unit(
    model_dir: Path, unit: Unit, metadata: dict[str, Any], num_layers: int
) -> dict[str, torch.Tensor]:
    """The global tensors of one unit (for a layer: that layer's slice of each stacked tensor)."""
    request = {}
    for rule in unit.rules:
        meta = metadata[rule.megatron_key()]
        if rule.layered:
            data = torch.empty((1, *meta.global_shape[1:]), dtype=meta.dtype)
            request[rule.megatron_key()] = ShardedTensor.from_rank_offsets(
                rule.megatron_key(), data, (0, unit.layer, num_layers), replica_id=0
            )
        else:
            data = torch.empty(tuple(meta.global_shape), dtype=meta.dtype)
            request[rule.megatron_key()] = ShardedTensor.from_rank_offsets(
                rule.megatron_key(), data, replica_id=0
            )
    loaded = dist_checkpointing.load(request, str(model_dir), validate_access_integrity=False)
    return {key: tensor[0] if key.startswith("decoder.layers.") else tensor for key, tensor in loaded.items()}


@dataclass(frozen=True)
class ExportPlan:
    """Everything checked before any tensor is read: where from, where to, how."""

    directory: Path
    model_dir: Path
    source: Path
    out: Path
    config: dict[str, Any]
    spec: ModelSpec
    adapter: Adapter
    metadata: dict[str, Any]
    out_dtype: torch.dtype | None
    max_bytes: int


def plan_export(
    ckpt: str | Path,
    out: str | Path,
    *,
    hf_source: str | Path | None = None,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
) -> ExportPlan:
    """Validate the inputs of an export (no process group needed); errors name the file or key and the fix.

    Args:
        ckpt: a checkpoint root (its `latest` is used) or one `step_XXXXXXXX` directory.
        hf_source: the Hugging Face folder the run started from; default: the checkpoint's record.
        dtype: `auto` keeps the checkpoint's dtype; or float32, bfloat16, float16.
    """
    out = check_empty_output(out, "--out")
    max_bytes = parse_size(max_shard_size)
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not supported; use one of auto, {', '.join(DTYPES)}")
    directory = locate_checkpoint(ckpt)
    state = torch.load(directory / "trainer_state.pt", weights_only=False)
    source = locate_hf_source(directory, state, hf_source)
    config, spec, adapter = read_config(source)
    model_dir = directory / "model_optim"
    metadata = dist_checkpointing.load_tensors_metadata(str(model_dir))
    _check_metadata(metadata, adapter.rules(spec), spec, source)
    return ExportPlan(
        directory=directory,
        model_dir=model_dir,
        source=source,
        out=out,
        config=config,
        spec=spec,
        adapter=adapter,
        metadata=metadata,
        out_dtype=None if dtype == "auto" else DTYPES[dtype],
        max_bytes=max_bytes,
    )


def write_export(plan: ExportPlan, *, progress: bool | None = None) -> Path:
    """Stream the checkpoint into the Hugging Face folder `plan.out`; collective, rank 0 writes.

    `progress`: show a progress bar; None shows it when stderr is a terminal.
    """
    from rich.progress import Progress

    spec, out, rules = plan.spec, plan.out, plan.adapter.rules(plan.spec)
    d = dims(spec)
    writes = dist.get_rank() == 0
    staging = out.parent / f".{out.name}.partial"
    if writes:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    writer = ShardWriter(staging, plan.max_bytes)
    todo = units(rules, spec.num_layers)
    show = writes and (sys.stderr.isatty() if progress is None else progress)
    with Progress(disable=not show) as bar:
        task = bar.add_task(f"{plan.directory.name} -> {out.name}", total=len(todo))
        for unit in todo:
            tensors = _load_unit(plan.model_dir, unit, plan.metadata, spec.num_layers)
            for rule in unit.rules:
                full = tensors[rule.megatron_key()]
                for name, tensor in split_global(rule.blocks(d, full.shape[0], unit.layer), full).items():
                    if writes:
                        writer.add(name, tensor if plan.out_dtype is None else tensor.to(plan.out_dtype))
            bar.update(task, advance=1, description=unit.name)
    if writes:
        writer.close()
        _write_metadata(plan, staging)
        if out.exists():
            out.rmdir()  # checked empty by plan_export
        os.replace(staging, out)
    if dist.get_world_size() > 1:
        dist.barrier()
    return out


def _write_metadata(plan: ExportPlan, staging: Path) -> None:
    """config.json (with the written dtype), generation_config.json and the tokenizer files."""
    written = str(plan.out_dtype or plan.metadata[plan.adapter.rules(plan.spec)[0].megatron_key()].dtype)
    written = written.removeprefix("torch.")
    copy_metadata(plan.source, staging, skip=("config.json",))
    # Both spellings: transformers 5 reads `dtype`, 4.x reads `torch_dtype`.
    config = {
        **plan.config,
        "architectures": [plan.adapter.architecture],
        "dtype": written,
        "torch_dtype": written,
    }
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if not (staging / "generation_config.json").is_file():
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def export_to_hf(
    ckpt: str | Path,
    out: str | Path,
    *,
    hf_source: str | Path | None = None,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    progress: bool | None = None,
) -> Path:
    """`plan_export` then `write_export`: checkpoint `ckpt` -> Hugging Face folder `out` (collective)."""
    plan = plan_export(ckpt, out, hf_source=hf_source, dtype=dtype, max_shard_size=max_shard_size)
    return write_export(plan, progress=progress)
