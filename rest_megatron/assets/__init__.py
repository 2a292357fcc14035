"""Tiny local assets for tests and CPU recipes: a seeded BPE tokenizer and random-init HF models.

Nothing here touches the network; everything is built from a seed and cached on disk.
"""

from rest_megatron.assets.tiny_models import TINY_MODELS, build_tiny_hf_model, tiny_hf_config, tiny_model_dir
from rest_megatron.assets.tokenizer import build_tiny_tokenizer, save_tiny_tokenizer

__all__ = [
    "TINY_MODELS",
    "build_tiny_hf_model",
    "build_tiny_tokenizer",
    "save_tiny_tokenizer",
    "tiny_hf_config",
    "tiny_model_dir",
]
