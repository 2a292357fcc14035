"""Tiny HF models: configs per family, deterministic weights, and real load/forward/generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rest_megatron.assets import (
    TINY_MODELS,
    build_tiny_hf_model,
    build_tiny_tokenizer,
    tiny_hf_config,
    tiny_model_dir,
)

EXPECTED_CLASS = {
    "tiny-qwen3": "Qwen3ForCausalLM",
    "tiny-qwen2": "Qwen2ForCausalLM",
    "tiny-llama": "LlamaForCausalLM",
}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="tiny-qwen3, tiny-qwen2, tiny-llama"):
        tiny_hf_config("tiny-gpt2")
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny_model_dir("qwen3")


@pytest.mark.parametrize("name", TINY_MODELS)
def test_config_shapes(name: str) -> None:
    cfg = tiny_hf_config(name)
    assert cfg["architectures"] == [EXPECTED_CLASS[name]]
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (128, 4, 2)
    assert (cfg["head_dim"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (32, 4, 256)
    tok_len = len(build_tiny_tokenizer())
    assert cfg["vocab_size"] % 8 == 0 and tok_len <= cfg["vocab_size"] < tok_len + 8
    assert cfg["tie_word_embeddings"] is (name == "tiny-qwen2")
    cfg["vocab_size"] = 0  # callers get a copy
    assert tiny_hf_config(name)["vocab_size"] > 0


def test_llama_has_llama3_rope_scaling() -> None:
    assert tiny_hf_config("tiny-llama")["rope_scaling"]["rope_type"] == "llama3"


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a = build_tiny_hf_model("tiny-qwen3", tmp_path / "a", seed=0)
    b = build_tiny_hf_model("tiny-qwen3", tmp_path / "b", seed=0)
    c = build_tiny_hf_model("tiny-qwen3", tmp_path / "c", seed=1)
    weights = [(d / "model.safetensors").read_bytes() for d in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_loads_runs_and_generates(name: str) -> None:
    path = tiny_model_dir(name)
    assert tiny_model_dir(name) == path  # cached
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == EXPECTED_CLASS[name]
    params = dict(model.named_parameters())
    # Family-specific parts are really there.
    assert ("model.layers.0.self_attn.q_norm.weight" in params) is (name == "tiny-qwen3")
    assert ("model.layers.0.self_attn.q_proj.bias" in params) is (name == "tiny-qwen2")
    assert (model.lm_head.weight is model.model.embed_tokens.weight) is (name == "tiny-qwen2")
    # Random init, not zeros: the layers see different numbers.
    assert params["model.layers.0.mlp.up_proj.weight"].std() > 0.01

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Weather in Paris?"}], add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], tiny_hf_config(name)["vocab_size"])
    assert torch.isfinite(logits).all()
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, min_new_tokens=4
    )
    assert out.shape == (1, ids.shape[1] + 4) and torch.equal(out[0, : ids.shape[1]], ids[0])
