"""Qwen2 / Qwen2.5: the common map plus biases on q, k and v (hard-wired in Qwen2's attention)."""

from __future__ import annotations

from rest_megatron.convert.adapters.common import QKV_BIAS, Adapter, family_rules

ADAPTER = Adapter(family="qwen2", architecture="Qwen2ForCausalLM", layer_rules=family_rules(QKV_BIAS))
