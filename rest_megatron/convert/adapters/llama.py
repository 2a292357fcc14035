"""Llama 3.x: the common map (q/k/v biases only if `attention_bias`).

Hugging Face's Llama weights are already in the rotate-half RoPE order that Megatron uses
(`rotary_interleaved=False`), so q and k need no permutation. llama3 RoPE scaling is a config fact
that `model/builder.py` applies; it has no weights.
"""

from __future__ import annotations

from rest_megatron.convert.adapters.common import QKV_BIAS, Adapter, family_rules

ADAPTER = Adapter(
    family="llama", architecture="LlamaForCausalLM", layer_rules=family_rules(QKV_BIAS.only_when("qkv_bias"))
)
