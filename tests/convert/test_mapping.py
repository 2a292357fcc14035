"""The block map: Megatron's fused QKV / fc1 / padded-vocab layouts, sliced reads and their inverse."""

from __future__ import annotations

import torch

from rest_megatron.assets import tiny_hf_config
from rest_megatron.convert.mapping import (
    Block,
    concat,
    dims,
    grouped_qkv,
    join_hf,
    padded_vocab,
    read_rows,
    split_global,
    units,
)
from rest_megatron.model.builder import model_spec_from_hf

# 4 query heads in 2 KV groups, head_dim 2, hidden 3.
D = {"hidden": 3, "ffn": 5, "q": 8, "kv": 4, "head_dim": 2, "vocab": 6}
QKV = grouped_qkv("self_attention.linear_qkv.weight", "self_attn.{part}_proj.weight", ("q", "hidden"))


def _heads(tag: float, num_heads: int) -> torch.Tensor:
    """[num_heads * head_dim, hidden] where every row of head h holds tag + h."""
    return (
        (tag + torch.arange(num_heads, dtype=torch.float32))
        .repeat_interleave(2)[:, None]
        .expand(-1, 3)
        .clone()
    )


def test_qkv_is_grouped_q_heads_then_k_then_v() -> None:
    q, k, v = _heads(0, 4), _heads(10, 2), _heads(20, 2)
    names = {f"model.layers.1.self_attn.{p}_proj.weight": t for p, t in zip("qkv", (q, k, v))}
    fused = join_hf(QKV.blocks(D, 16, 1), names, 16)
    # group 0: q heads 0, 1, k head 0, v head 0; group 1: q heads 2, 3, k head 1, v head 1
    assert fused[::2, 0].tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert all(torch.equal(split_global(QKV.blocks(D, 16, 1), fused)[n], t) for n, t in names.items())


def test_sliced_read_equals_slice_of_the_whole() -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 3, generator=gen),
        "model.layers.0.self_attn.k_proj.weight": torch.randn(4, 3, generator=gen),
        "model.layers.0.self_attn.v_proj.weight": torch.randn(4, 3, generator=gen),
    }
    blocks = QKV.blocks(D, 16, 0)
    whole = join_hf(blocks, tensors, 16)
    reads = []

    def read(name: str, rows: slice, cols: slice | None) -> torch.Tensor:
        reads.append((name, rows.stop - rows.start))
        return tensors[name][rows, cols]

    for rows, cols in [(slice(8, 16), slice(0, 3)), (slice(3, 11), slice(1, 3)), (slice(0, 1), slice(2, 3))]:
        reads.clear()
        part = read_rows(read, blocks, rows, cols, dtype=torch.float64, width=cols.stop - cols.start)
        assert part.dtype == torch.float64 and torch.equal(part, whole[rows, cols].double())
        assert sum(n for _, n in reads) == rows.stop - rows.start  # nothing outside the slice is read


def test_fc1_is_gate_then_up_and_vocab_padding_is_zero_and_dropped() -> None:
    fc1 = concat("mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), ("ffn", "hidden"))
    assert fc1.blocks(D, 10, 2) == [
        Block("model.layers.2.mlp.gate_proj.weight", 0, 5),
        Block("model.layers.2.mlp.up_proj.weight", 0, 5),
    ]
    embedding = padded_vocab("embedding.word_embeddings.weight", "model.embed_tokens.weight")
    table = torch.randn(6, 3)
    padded = join_hf(embedding.blocks(D, 8), {"model.embed_tokens.weight": table}, 8)
    assert padded.shape == (8, 3) and torch.equal(padded[:6], table) and not padded[6:].any()
    assert torch.equal(split_global(embedding.blocks(D, 8), padded)["model.embed_tokens.weight"], table)
    assert embedding.megatron_rows(D) is None and fc1.megatron_rows(D) == 10 and QKV.megatron_rows(D) == 16


def test_units_are_in_hugging_face_order() -> None:
    from rest_megatron.convert.adapters import ADAPTERS

    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    plan = units(ADAPTERS["qwen3"].rules(spec), spec.num_layers)
    assert [u.name for u in plan] == ["embedding", "layer 0", "layer 1", "layer 2", "layer 3", "head"]
    assert [r.megatron for r in plan[-1].rules] == ["decoder.final_layernorm.weight", "output_layer.weight"]
    assert dims(spec)["q"] == 128 and dims(spec)["kv"] == 64
