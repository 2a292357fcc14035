"""One Hugging Face <-> Megatron adapter per model family, registered by `ModelSpec.family`.

Each family module has the same shape: a docstring naming what sets it apart, and one `ADAPTER`
built from the common map (`common.py`) plus the family's own rules. A new family adds a module
and a line here, and must pass `tests/convert/test_adapters.py`.
"""

from __future__ import annotations

from rest_megatron.convert.adapters import llama, qwen2, qwen3
from rest_megatron.convert.adapters.common import IGNORED_HF_SUFFIXES, Adapter
from rest_megatron.model.builder import ModelSpec

ADAPTERS: dict[str, Adapter] = {module.ADAPTER.family: module.ADAPTER for module in (qwen2, qwen3, llama)}


def get_adapter(spec: ModelSpec) -> Adapter:
    """The adapter of `spec.family`; an unknown family is an error listing the known ones."""
    if spec.family not in ADAPTERS:
        raise ValueError(
            f"no Hugging Face <-> Megatron adapter for model family {spec.family!r}; supported: "
            f"{', '.join(sorted(ADAPTERS))} (add one under rest_megatron/convert/adapters/)"
        )
    return ADAPTERS[spec.family]


__all__ = ["ADAPTERS", "IGNORED_HF_SUFFIXES", "Adapter", "get_adapter"]
