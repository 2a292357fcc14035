"""What every family shares: the `Adapter` shape and the common Hugging Face <-> Megatron map.

A family adapter (`qwen2.py`, `qwen3.py`, `llama.py`) is this common map plus the rules only that
family has. Megatron keys are the layout-independent keys of `GPTModel.sharded_state_dict()` (the
local layer spec maps its norms to the Transformer Engine names, so both specs share them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rest_megatron.convert.mapping import Rule, concat, copy, grouped_qkv, padded_vocab
from rest_megatron.model.builder import ModelSpec

EMBEDDING = padded_vocab("embedding.word_embeddings.weight", "model.embed_tokens.weight")
FINAL_NORM = copy("decoder.final_layernorm.weight", "model.norm.weight", ("hidden",), layered=False)
# Tied embeddings have no output layer of their own: Megatron keys the last stage's copy as the
# embedding, and Hugging Face checkpoints leave lm_head.weight out.
OUTPUT = padded_vocab("output_layer.weight", "lm_head.weight").only_when("untied_embeddings")

COMMON_LAYER_RULES: tuple[Rule, ...] = (
    copy("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight", ("hidden",)),
    grouped_qkv("self_attention.linear_qkv.weight", "self_attn.{part}_proj.weight", ("q", "hidden")),
    copy("self_attention.linear_proj.weight", "self_attn.o_proj.weight", ("hidden", "q")),
    copy("mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight", ("hidden",)),
    concat("mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), ("ffn", "hidden")),
    copy("mlp.linear_fc2.weight", "mlp.down_proj.weight", ("hidden", "ffn")),
)
QKV_BIAS = grouped_qkv("self_attention.linear_qkv.bias", "self_attn.{part}_proj.bias", ("q",))
QK_NORM: tuple[Rule, ...] = (
    copy("self_attention.q_layernorm.weight", "self_attn.q_norm.weight", ("head_dim",)),
    copy("self_attention.k_layernorm.weight", "self_attn.k_norm.weight", ("head_dim",)),
)

IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)
"""Hugging Face tensors that carry no weights (old checkpoints saved RoPE buffers)."""


@dataclass(frozen=True)
class Adapter:
    """The Hugging Face <-> Megatron map of one model family."""

    family: str
    """The `ModelSpec.family` it serves."""
    architecture: str
    """The Hugging Face class (config.json `architectures`)."""
    layer_rules: tuple[Rule, ...]
    """Per-layer rules: `COMMON_LAYER_RULES` plus the family's own."""
    top_rules: tuple[Rule, ...] = (EMBEDDING, FINAL_NORM, OUTPUT)
    """Embedding, final norm and output layer."""

    def rules(self, spec: ModelSpec) -> list[Rule]:
        """The rules that apply to `spec` (optional ones depend on its flags)."""
        facts = _Facts(spec)
        return [rule for rule in (*self.top_rules, *self.layer_rules) if rule.applies(facts)]

    def megatron_keys(self, spec: ModelSpec) -> list[str]:
        return [rule.megatron_key() for rule in self.rules(spec)]


class _Facts:
    """`spec` plus derived flags that rules can be conditioned on."""

    def __init__(self, spec: ModelSpec) -> None:
        self._spec = spec
        self.untied_embeddings = not spec.tie_word_embeddings

    def __getattr__(self, name: str):
        return getattr(self._spec, name)


def family_rules(*extra: Rule | Iterable[Rule]) -> tuple[Rule, ...]:
    """`COMMON_LAYER_RULES` followed by a family's own rules."""
    flat: list[Rule] = []
    for item in extra:
        flat.extend([item] if isinstance(item, Rule) else item)
    return COMMON_LAYER_RULES + tuple(flat)
