"""Qwen3: the common map plus per-head RMSNorm on q and k (and q/k/v biases if `attention_bias`)."""

from __future__ import annotations

from rest_megatron.convert.adapters.common import QK_NORM, QKV_BIAS, Adapter, family_rules

ADAPTER = Adapter(
    family="qwen3",
    architecture="Qwen3ForCausalLM",
    layer_rules=family_rules(QK_NORM, QKV_BIAS.only_when("qkv_bias")),
)
