"""Hugging Face folder -> Megatron distributed checkpoint, on TP×PP ranks, one slice at a time.

Every rank builds its own pipeline stage of the GPTModel (no random init: parameters start as NaN
so a tensor the map misses cannot go unnoticed), walks the rectangles Megatron says it holds
(`pieces.local_pieces`) and fills each one from the safetensors slices that make it up
(`mapping.read_rows`). No process ever reads a tensor it does not hold a part of, and none holds
more than its own shard. The result is saved with the trainer's `save_checkpoint` at step 0, so
training starts from it and it loads at any TP/PP with the same padded vocabulary.

The source's config.json and tokenizer files are copied to `OUT/hf_source/`, and the checkpoint's
trainer state records them under `hf_source` (`to-hf` reads them back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rest_megatron.convert.adapters import Adapter, get_adapter
from rest_megatron.convert.hf_files import HFWeights, check_empty_output, copy_metadata, read_config
from rest_megatron.convert.mapping import dims, read_rows, rules_by_key
from rest_megatron.convert.pieces import local_pieces
from rest_megatron.model.builder import ModelSpec

HF_SOURCE_DIR = "hf_source"
"""Where, under the checkpoint root, the source's config and tokenizer files are kept."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, config: dict[str, Any]) -> torch.dtype:
    """`auto` -> the dtype config.json declares (`dtype` or `torch_dtype`), float32 if none."""
    if name == "auto":
        name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not supported; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


@torch.no_grad()
def load_hf_into_model(
    gpt: torch.nn.Module, spec: ModelSpec, weights: HFWeights, adapter: Adapter | None = None
) -> int:
    """Fill this rank's model chunk (`gpt`, or a wrapper) from Hugging Face weights; returns elements read.

    Rank-local: no collectives. Every parameter must be covered, else RuntimeError names it.
    """
    adapter = adapter or get_adapter(spec)
    by_key = rules_by_key(adapter.rules(spec))
    d = dims(spec)
    for param in gpt.parameters():
        param.fill_(float("nan"))
    count = 0
    for piece in local_pieces(gpt):
        rule = by_key.get(piece.key)
        if rule is None:
            raise RuntimeError(
                f"the {adapter.family} adapter has no rule for Megatron tensor {piece.key}; add one in "
                "rest_megatron/convert/adapters/"
            )
        blocks = rule.blocks(d, piece.global_shape[0], piece.layer)
        rows, *cols = piece.region()
        width = piece.data.shape[1] if piece.data.dim() > 1 else None
        piece.data.copy_(
            read_rows(
                weights.read, blocks, rows, cols[0] if cols else None, dtype=piece.data.dtype, width=width
            )
        )
        count += piece.data.numel()
    unfilled = [name for name, param in gpt.named_parameters() if torch.isnan(param).any()]
    if unfilled:
        raise RuntimeError(
            f"no Hugging Face tensor was mapped onto {', '.join(unfilled)}; the adapter is incomplete"
        )
    return count


def convert_from_hf(
    hf_dir: str | Path,
    out: str | Path,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: str = "auto",
    padded_vocab_multiple: int = 128,
) -> str:
    """Convert on every rank of the initialized world (collective); returns the checkpoint directory.

    World size must be a multiple of tp×pp (extra ranks are data-parallel replicas and write
    nothing twice).
    """
    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.model.builder import build_gpt_model, padded_vocab_size, transformer_config
    from rest_megatron.trainer.checkpoint import save_checkpoint

    hf_dir, out = Path(hf_dir).resolve(), Path(out)
    config, spec, adapter = read_config(hf_dir)
    weights = HFWeights.open(hf_dir, spec=spec, adapter=adapter)
    torch_dtype = resolve_dtype(dtype, config)
    check_empty_output(out, "--out")
    dist.barrier()  # every rank checked before rank 0 writes anything
    init_model_parallel(ParallelLayout(tp=tp, pp=pp), seed=0)
    model_config = transformer_config(spec, tp=tp, pp=pp, dtype=torch_dtype, perform_initialization=False)
    padded = padded_vocab_size(spec.vocab_size, tp, padded_vocab_multiple)
    gpt = build_gpt_model(spec, model_config, padded_vocab=padded)
    load_hf_into_model(gpt, spec, weights, adapter)
    weights.close()
    copied: list[str] = []
    if dist.get_rank() == 0:
        copied = copy_metadata(hf_dir, out / HF_SOURCE_DIR)
    hf_source = {
        "dir": HF_SOURCE_DIR,
        "origin": str(hf_dir),
        "files": copied,
        "family": spec.family,
        "padded_vocab_size": padded,
        "dtype": str(torch_dtype).removeprefix("torch."),
    }
    directory = save_checkpoint(out, 0, gpt, trainer_state={"hf_source": hf_source})
    return str(directory)
