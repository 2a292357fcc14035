"""Where `plan` gets a model's shape: its config.json when downloaded, else a table of known models.

`plan` runs before the user has downloaded anything, so it cannot insist on model.path existing. The
table holds the `config.json` fields that matter for memory (and for `model_spec_from_hf`) of the models
our recipes name. Source: each model's `config.json` on the Hugging Face hub (Qwen/Qwen3-1.7B,
Qwen/Qwen3-4B-Instruct-2507, Qwen/Qwen3-8B, meta-llama/Llama-3.2-3B-Instruct), copied by hand; a
downloaded config.json always wins over the table.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rest_megatron.config import TINY_MODELS, ConfigError, read_model_config

_QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 128, "rms_norm_eps": 1e-6,
          "vocab_size": 151936}  # fmt: skip

KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-1.7B": {
        **_QWEN3, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 40960,
        "rope_theta": 1000000.0, "tie_word_embeddings": True,
    },
    "Qwen/Qwen3-4B-Instruct-2507": {
        **_QWEN3, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 262144,
        "rope_theta": 5000000.0, "tie_word_embeddings": True,
    },
    "Qwen/Qwen3-8B": {
        **_QWEN3, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 40960,
        "rope_theta": 1000000.0, "tie_word_embeddings": False,
    },
    "meta-llama/Llama-3.2-3B-Instruct": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
        "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    },
}  # fmt: skip
"""Hub id -> config.json subset. Matched against model.path by hub id or by its last path component."""


def known_model_config(path: str) -> tuple[str, dict[str, Any]] | None:
    """(hub id, config) of the known model that `path` names, or None.

    A path matches by hub id (`Qwen/Qwen3-8B`) or by its last component, case-insensitively
    (`models/Qwen3-8B`, as `huggingface-cli download Qwen/Qwen3-8B --local-dir models/Qwen3-8B` writes it).
    """
    name = Path(path.rstrip("/")).name.lower()
    for hub_id, hf in KNOWN_MODELS.items():
        if path == hub_id or name == hub_id.split("/")[1].lower():
            return hub_id, copy.deepcopy(hf)
    return None


def find_model_config(path: str) -> tuple[dict[str, Any], str]:
    """The HF config of model.path and where it came from (for the report).

    Order: a built-in tiny model, then `<path>/config.json` when `path` exists locally, then the table.

    Raises:
        ConfigError: the path is not downloaded and not a known model, or its config.json is unreadable.
    """
    if path in TINY_MODELS or Path(path).exists():
        return read_model_config(
            path
        ), f"{path}/config.json" if path not in TINY_MODELS else "built-in tiny model"
    known = known_model_config(path)
    if known is not None:
        hub_id, hf = known
        return hf, f"built-in table ({hub_id}; {path} is not downloaded)"
    names = ", ".join(KNOWN_MODELS)
    raise ConfigError(
        f"model.path '{path}' does not exist and is not a known architecture ({names}); download the model "
        f"(e.g. `huggingface-cli download <hub id> --local-dir {path}`) so plan can read its config.json"
    )
