"""Contract for every registered family adapter: a new family must pass these too.

Against the tiny model of the family (real transformers weights): the adapter's rules name exactly
the Hugging Face tensors, with the shapes the config implies; Hugging Face -> Megatron -> Hugging
Face is the identity; and the families share the common map, stating only their differences.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rest_megatron.assets import tiny_model_dir
from rest_megatron.convert.adapters import ADAPTERS, get_adapter
from rest_megatron.convert.adapters.common import COMMON_LAYER_RULES
from rest_megatron.convert.hf_files import expected_hf_shapes, read_config
from rest_megatron.convert.mapping import dims, join_hf, split_global
from rest_megatron.model.builder import padded_vocab_size

TINY_MODEL_OF = {"qwen2": "tiny-qwen2", "qwen3": "tiny-qwen3", "llama": "tiny-llama"}


def test_every_adapter_has_a_tiny_model() -> None:
    assert sorted(ADAPTERS) == sorted(TINY_MODEL_OF)


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_adapter_names_every_tensor_with_its_shape(family: str) -> None:
    folder = tiny_model_dir(TINY_MODEL_OF[family])
    config, spec, adapter = read_config(folder)
    assert adapter is ADAPTERS[family] and config["architectures"] == [adapter.architecture]
    tensors = load_file(str(folder / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == expected_hf_shapes(adapter, spec)


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_hf_to_megatron_to_hf_is_identity(family: str) -> None:
    folder = tiny_model_dir(TINY_MODEL_OF[family])
    _, spec, adapter = read_config(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    d = dims(spec)
    back: dict[str, torch.Tensor] = {}
    for rule in adapter.rules(spec):
        for layer in range(spec.num_layers) if rule.layered else [None]:
            names = rule.hf_shapes(d, layer)
            rows = rule.megatron_rows(d) or padded_vocab_size(spec.vocab_size, 2)
            blocks = rule.blocks(d, rows, layer)
            fused = join_hf(blocks, {n: tensors[n] for n in names}, rows)
            assert fused.shape[0] == rows
            back.update(split_global(blocks, fused))
    assert sorted(back) == sorted(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_families_share_the_common_map() -> None:
    for adapter in ADAPTERS.values():
        assert adapter.layer_rules[: len(COMMON_LAYER_RULES)] == COMMON_LAYER_RULES
    own = {
        family: [r.megatron for r in a.layer_rules[len(COMMON_LAYER_RULES) :]]
        for family, a in ADAPTERS.items()
    }
    assert own["qwen3"][:2] == ["self_attention.q_layernorm.weight", "self_attention.k_layernorm.weight"]
    assert own["qwen2"] == ["self_attention.linear_qkv.bias"]


def test_optional_rules_follow_the_config() -> None:
    _, spec, adapter = read_config(tiny_model_dir("tiny-llama"))
    keys = adapter.megatron_keys(spec)
    assert "output_layer.weight" in keys and "decoder.layers.self_attention.linear_qkv.bias" not in keys
    from dataclasses import replace

    biased_tied = replace(spec, qkv_bias=True, tie_word_embeddings=True)
    keys = adapter.megatron_keys(biased_tied)
    assert "output_layer.weight" not in keys and "decoder.layers.self_attention.linear_qkv.bias" in keys


def test_unknown_family_names_the_supported_ones() -> None:
    from dataclasses import replace

    _, spec, _ = read_config(tiny_model_dir("tiny-llama"))
    with pytest.raises(
        ValueError,
        match="no Hugging Face <-> Megatron adapter for model family 'mistral'.*llama, qwen2, qwen3",
    ):
        get_adapter(replace(spec, family="mistral"))
