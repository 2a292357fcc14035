"""Model builders: each supported family maps its HF config to the right Megatron switches."""

from __future__ import annotations

import pytest

from rest_megatron.assets import TINY_MODELS, tiny_hf_config
from rest_megatron.model.builder import model_spec_from_hf, padded_vocab_size


def test_family_switches_come_from_the_hf_config() -> None:
    specs = {name: model_spec_from_hf(tiny_hf_config(name)) for name in TINY_MODELS}
    assert [specs["tiny-qwen3"].qk_layernorm, specs["tiny-qwen3"].qkv_bias] == [True, False]
    assert [specs["tiny-qwen2"].qk_layernorm, specs["tiny-qwen2"].qkv_bias] == [False, True]
    assert specs["tiny-qwen2"].tie_word_embeddings and not specs["tiny-qwen3"].tie_word_embeddings
    assert specs["tiny-llama"].llama3_rope["factor"] == tiny_hf_config("tiny-llama")["rope_scaling"]["factor"]
    assert specs["tiny-qwen3"].llama3_rope is None
    assert all(s.num_query_groups == 2 and s.head_dim == 32 for s in specs.values())


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    hf = dict(tiny_hf_config("tiny-qwen3"), architectures=["MixtralForCausalLM"])
    with pytest.raises(
        ValueError,
        match=r"unsupported architecture \['MixtralForCausalLM'\]; supported: "
        r"LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM",
    ):
        model_spec_from_hf(hf)


def test_llama3_rope_frequencies_match_transformers() -> None:
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from rest_megatron.model.builder import llama3_inv_freq

    hf = tiny_hf_config("tiny-llama")
    spec = model_spec_from_hf(hf)
    base = 1.0 / (spec.rope_theta ** (torch.arange(0, spec.head_dim, 2, dtype=torch.float32) / spec.head_dim))
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**hf), "cpu")
    assert torch.allclose(llama3_inv_freq(base, **spec.llama3_rope), expected, rtol=1e-6)


def test_unknown_rope_scaling_is_refused() -> None:
    hf = dict(tiny_hf_config("tiny-llama"), rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported; only llama3"):
        model_spec_from_hf(hf)


@pytest.mark.parametrize(
    ("vocab", "tp", "multiple", "expected"),
    [(1544, 1, 128, 1664), (1544, 2, 128, 1792), (151936, 8, 128, 152576)],
)
def test_vocab_is_padded_to_a_multiple_per_tp_rank(vocab: int, tp: int, multiple: int, expected: int) -> None:
    padded = padded_vocab_size(vocab, tp, multiple)
    assert padded == expected and padded % (tp * multiple) == 0 and padded >= vocab


def _build_each_family(name: str, tp: int) -> dict:
    import torch

    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.model.builder import build_gpt_model, transformer_config

    init_model_parallel(ParallelLayout(tp=tp, pp=1), seed=0, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config(name))
    model = build_gpt_model(spec, transformer_config(spec, tp=tp))
    names = [n for n, _ in model.named_parameters()]
    logits = model(torch.randint(0, spec.vocab_size, (2, 8)), torch.arange(8).expand(2, 8), None)
    return {"names": names, "logits_shape": tuple(logits.shape), "finite": bool(torch.isfinite(logits).all())}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_each_family_builds_and_runs_at_tp2(gloo, name: str) -> None:
    result = gloo(2).run(_build_each_family, name, 2)[0]
    names = result["names"]
    assert result["finite"] and result["logits_shape"] == (
        2,
        8,
        padded_vocab_size(model_spec_from_hf(tiny_hf_config(name)).vocab_size, 2) // 2,
    )
    assert any("q_layernorm" in n for n in names) == (name == "tiny-qwen3")
    assert any(n.endswith("linear_qkv.bias") for n in names) == (name == "tiny-qwen2")
    assert ("output_layer.weight" in names) == (name != "tiny-qwen2")  # Qwen2 ties embeddings


def test_transformers5_rope_parameters_alone_are_read() -> None:
    hf = tiny_hf_config("tiny-llama")
    legacy = {k: v for k, v in hf.items() if k not in ("rope_scaling", "rope_theta")}
    modern = dict(legacy, rope_parameters={**hf["rope_scaling"], "rope_theta": hf["rope_theta"]})
    spec = model_spec_from_hf(modern)
    assert spec.llama3_rope == model_spec_from_hf(hf).llama3_rope and spec.rope_theta == hf["rope_theta"]
    qwen = dict(tiny_hf_config("tiny-qwen3"), rope_parameters={"rope_type": "default", "rope_theta": 5.0})
    assert model_spec_from_hf({k: v for k, v in qwen.items() if k != "rope_theta"}).llama3_rope is None
