"""Tiny random-init Hugging Face models of the families we support, built locally from a seed.

Each tiny model has the real architecture of its family (so the HF <-> Megatron converters and the
CPU inference engine exercise real code paths) at toy size: hidden 128, 4 heads, 2 KV heads,
head_dim 32, 4 layers, SwiGLU intermediate 256, and the tiny tokenizer's vocabulary rounded up to a
multiple of 8 (the extra rows are never produced by the tokenizer, as in real checkpoints).

| name        | HF class          | family-specific parts                                         |
|-------------|-------------------|---------------------------------------------------------------|
| tiny-qwen3  | Qwen3ForCausalLM  | q/k RMSNorm, no qkv bias, untied embeddings, rope_theta 1e6    |
| tiny-qwen2  | Qwen2ForCausalLM  | qkv bias (hard-wired in transformers), tied embeddings         |
| tiny-llama  | LlamaForCausalLM  | llama3 rope_scaling, rope_theta 5e5, untied embeddings         |

Weights are `AutoModelForCausalLM.from_config` under `torch.manual_seed(seed)`: the same seed gives the
same weights. Folders are cached like the tokenizer (see `_cache.py`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import tokenizers
import torch
import transformers

from rest_megatron.assets._cache import cache_key, cached_dir
from rest_megatron.assets.tokenizer import (
    BUILDER_VERSION,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TOKENIZER_SIZE,
    chat_template,
    save_tiny_tokenizer,
)
from rest_megatron.config.schema import TINY_MODELS  # the names live with the config that accepts them

PAD_TOKEN_ID = SPECIAL_TOKENS.index(PAD_TOKEN)
EOS_TOKEN_ID = SPECIAL_TOKENS.index(EOS_TOKEN)
VOCAB_SIZE = -(-TOKENIZER_SIZE // 8) * 8  # rounded up to a multiple of 8, as TP-friendly vocabularies are

_COMMON: dict[str, object] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "use_cache": True,
    # Like Qwen's instruct checkpoints: bos id is <|endoftext|>, although the tokenizer adds no BOS.
    "bos_token_id": PAD_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
    "pad_token_id": PAD_TOKEN_ID,
    "torch_dtype": "float32",
}

# Legacy (transformers 4.x) key names on purpose: transformers 5 still reads `rope_theta` and
# `rope_scaling` and folds them into `rope_parameters`, while 4.x does not know `rope_parameters`.
_FAMILY: dict[str, dict[str, object]] = {
    "tiny-qwen3": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "rope_theta": 1_000_000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 4,
    },
    "tiny-qwen2": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "rope_theta": 1_000_000.0,
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 4,
    },
    "tiny-llama": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "rope_theta": 500_000.0,
        # Llama 3.1's scheme, shrunk so that some of head_dim 32's frequencies are actually rescaled.
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024,
        },
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
    },
}


def _check_name(name: str) -> None:
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; use one of {', '.join(TINY_MODELS)}")


def tiny_hf_config(name: str) -> dict[str, object]:
    """The Hugging Face `config.json` contents of tiny model `name` (a fresh dict each call)."""
    _check_name(name)
    return copy.deepcopy({**_FAMILY[name], **_COMMON})


def _add_legacy_keys(config_path: Path, hf: dict[str, object]) -> None:
    # transformers 5 saves `rope_parameters` and `dtype`; 4.x reads only `rope_theta`,
    # `rope_scaling` and `torch_dtype` and would silently fall back to default RoPE. Writing both
    # spellings keeps the folder loadable by either (5.x still accepts the legacy keys).
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("rope_theta", "rope_scaling", "torch_dtype"):
        saved.setdefault(key, hf[key])
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_tiny_hf_model(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a complete HF model folder for `name` into `out_dir` and return its path.

    The folder holds config.json, model.safetensors (random init from `seed`),
    generation_config.json and the tiny tokenizer (trained with the same seed) with its chat
    template, so `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load it
    offline.
    """
    _check_name(name)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}; pass e.g. seed=0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = tiny_hf_config(name)
    config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    # fork_rng: seeding must not leak into the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=PAD_TOKEN_ID,
        eos_token_id=[EOS_TOKEN_ID, PAD_TOKEN_ID],
        pad_token_id=PAD_TOKEN_ID,
    )
    model.save_pretrained(str(out))
    _add_legacy_keys(out / "config.json", tiny_hf_config(name))
    save_tiny_tokenizer(out, seed)
    return out


def tiny_model_dir(name: str, seed: int = 0) -> Path:
    """The cached folder of tiny model `name` for `seed`, built on first use."""
    _check_name(name)
    key = cache_key(
        builder=BUILDER_VERSION,
        name=name,
        seed=seed,
        config=tiny_hf_config(name),
        template=chat_template(),
        tokenizers=tokenizers.__version__,
        transformers=transformers.__version__,
        torch=torch.__version__,
    )
    return cached_dir(f"{name}-{key}", lambda tmp: build_tiny_hf_model(name, tmp, seed))
