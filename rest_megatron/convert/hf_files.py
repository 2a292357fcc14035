"""Hugging Face model folders: read safetensors by slice, validate against config.json, copy metadata.

`HFWeights.open(dir)` reads the index (or the single `model.safetensors`) and every shard's header
(no tensor data), so a missing shard or tensor, or a shape the config does not imply, is reported
before any conversion work. `read(name, rows, cols)` returns one rectangle of one tensor through
`safe_open(...).get_slice`: a rank reads only the bytes of its own shard of the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open as _safe_open

from rest_megatron.convert.adapters import IGNORED_HF_SUFFIXES, Adapter, get_adapter
from rest_megatron.convert.mapping import describe, dims
from rest_megatron.model.builder import ModelSpec, model_spec_from_hf

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
"""Files besides the weights that make a Hugging Face folder usable: config, tokenizer, template."""


def read_config(model_dir: str | Path) -> tuple[dict[str, Any], ModelSpec, Adapter]:
    """config.json of `model_dir`, its ModelSpec and adapter; errors name the file and the fix."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: point at a Hugging Face model folder (one with config.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it from the original model") from err
    try:
        spec = model_spec_from_hf(config)
    except KeyError as err:
        raise ValueError(f"{path} lacks the key {err}; restore it from the original model") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return config, spec, get_adapter(spec)


def expected_hf_shapes(adapter: Adapter, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every Hugging Face tensor the config implies, with its shape."""
    d = dims(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    for rule in adapter.rules(spec):
        for layer in range(spec.num_layers) if rule.layered else [None]:
            shapes.update(rule.hf_shapes(d, layer))
    return shapes


def safe_open(path: str | Path, framework: str) -> Any:
    """`safetensors.safe_open` whose errors name the file and the fix (the library's name neither)."""
    try:
        return _safe_open(str(path), framework)
    except SafetensorError as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}): it is truncated or corrupt, "
            "probably an interrupted download; fetch it again"
        ) from None


class HFWeights:
    """The safetensors of a Hugging Face folder, validated against its config, read by slice."""

    def __init__(
        self, model_dir: Path, weight_map: dict[str, str], shapes: dict[str, tuple[int, ...]]
    ) -> None:
        self.model_dir = model_dir
        self.weight_map = weight_map
        """Tensor name -> shard file name."""
        self.shapes = shapes
        """Tensor name -> shape (from the shard headers)."""
        self._handles: dict[str, Any] = {}

    @classmethod
    def open(
        cls, model_dir: str | Path, *, spec: ModelSpec | None = None, adapter: Adapter | None = None
    ) -> HFWeights:
        """Index and headers of `model_dir`'s shards; with `spec`, check them against the config."""
        model_dir = Path(model_dir)
        index = model_dir / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (model_dir / SINGLE).is_file():
            with safe_open(str(model_dir / SINGLE), "pt") as handle:
                weight_map = dict.fromkeys(handle.keys(), SINGLE)
        else:
            found = sorted(p.name for p in model_dir.glob("*.bin")) or sorted(
                p.name for p in model_dir.iterdir()
            )
            raise ValueError(
                f"{model_dir} has neither {INDEX} nor {SINGLE} "
                f"(found: {', '.join(found[:8]) or 'nothing'}); only safetensors are read: "
                "re-save the model with save_pretrained(..., safe_serialization=True)"
            )
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(weight_map.values())):
            path = model_dir / shard
            if not path.is_file():
                raise ValueError(
                    f"{path} is listed in {index.name} but missing: the download is incomplete; "
                    "fetch the missing shard (or the whole folder) again"
                )
            with safe_open(str(path), "pt") as handle:
                names = set(handle.keys())
                for name in (n for n, s in weight_map.items() if s == shard):
                    if name not in names:
                        raise ValueError(
                            f"{index.name} says {name} is in {path.name}, "
                            "but that shard does not contain it: "
                            "the shard and the index come from different downloads; fetch both again"
                        )
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        weights = cls(model_dir, weight_map, shapes)
        if spec is not None:
            weights.check(spec, adapter or get_adapter(spec))
        return weights

    def check(self, spec: ModelSpec, adapter: Adapter) -> None:
        """Every tensor the config implies exists with the implied shape, and no weights are left over."""
        config = self.model_dir / "config.json"
        expected = expected_hf_shapes(adapter, spec)
        facts = ", ".join(f"{k}={v}" for k, v in describe(spec).items())
        for name, shape in expected.items():
            if name not in self.shapes:
                raise ValueError(
                    f"{config} ({facts}) implies the tensor {name}, which no safetensors file in "
                    f"{self.model_dir} contains: the config does not match the weights; use the config.json "
                    "that came with these weights"
                )
            if self.shapes[name] != shape:
                raise ValueError(
                    f"{name} in {self.weight_map[name]} has shape {list(self.shapes[name])} but {config} "
                    f"({facts}) implies {list(shape)}: the config does not match the weights; use the "
                    "config.json that came with these weights"
                )
        leftover = sorted(
            name
            for name in self.shapes
            if name not in expected
            and not name.endswith(IGNORED_HF_SUFFIXES)
            # Tied checkpoints sometimes store lm_head anyway; transformers ignores it, and so do we.
            and not (spec.tie_word_embeddings and name == "lm_head.weight")
        )
        if leftover:
            raise ValueError(
                f"{self.model_dir} has {len(leftover)} tensors that {config} ({facts}) does not account "
                f"for, e.g. {', '.join(leftover[:4])}: the config does not match the weights (check "
                "num_hidden_layers, tie_word_embeddings, attention_bias); "
                "use the config.json that came with them"
            )

    def read(self, name: str, rows: slice, cols: slice | None = None) -> torch.Tensor:
        """Rows `rows` (and columns `cols`, for 2-D tensors) of tensor `name`, reading only that slice."""
        shard = self.weight_map[name]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.model_dir / shard), "pt")
        view = self._handles[shard].get_slice(name)
        return view[rows] if cols is None else view[rows, cols]

    def close(self) -> None:
        self._handles.clear()


def copy_metadata(source: str | Path, destination: str | Path, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy config, tokenizer and template files of `source` into `destination`; returns their names."""
    source, destination = Path(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in METADATA_FILES:
        if name not in skip and (source / name).is_file():
            shutil.copy2(source / name, destination / name)
            copied.append(name)
    return copied


def check_empty_output(path: str | Path, flag: str) -> Path:
    """`path` must not exist or be an empty directory (a conversion never overwrites)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{flag} {path} is not empty; choose a new directory or remove the old one first")
    return path
