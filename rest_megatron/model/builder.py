"""Build a megatron-core `GPTModel` from a Hugging Face `config.json`.

One function per concern: `model_spec_from_hf` reads the HF config into a family-neutral `ModelSpec`,
`transformer_config` turns that into Megatron's `TransformerConfig` for a parallel layout, and
`build_gpt_model` builds this rank's pipeline stage. Families differ only in a few switches:

| family           | qkv bias | q/k RMSNorm | embeddings      | RoPE scaling |
|------------------|----------|-------------|-----------------|--------------|
| Qwen2 / Qwen2.5  | yes      | no          | tied or untied  | none         |
| Qwen3            | no       | yes         | tied or untied  | none         |
| Llama 3.x        | no       | no          | tied or untied  | llama3       |

The layer spec is the recipe's `model.transformer_impl`: Transformer Engine or Megatron's local spec,
`auto` picking Transformer Engine exactly when a GPU is visible. A chosen Transformer Engine that does
not import is an error naming the fix, never a silent fallback to the local spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

# Megatron is imported inside the functions that build the model: `plan` and the HF-file checks read
# `ModelSpec` from here on machines where importing megatron-core (seconds, or broken) is not wanted.
if TYPE_CHECKING:
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import ModuleSpec, TransformerConfig

SUPPORTED_ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The architecture facts we need from a Hugging Face config, family-neutral."""

    family: str
    """One of qwen2, qwen3, llama."""
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    """Key/value heads (GQA groups)."""
    head_dim: int
    vocab_size: int
    """The tokenizer-side vocabulary; Megatron pads it (see `padded_vocab_size`)."""
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_layernorm: bool
    llama3_rope: dict[str, float] | None = None
    """llama3 RoPE scaling (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)."""
    hf_config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def load_hf_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{path} not found: model.path must be a Hugging Face model directory with a config.json"
        )
    return json.loads(path.read_text())


def model_spec_from_hf(hf: dict[str, Any]) -> ModelSpec:
    """Read a Hugging Face config dict; unsupported architectures get an error listing the supported."""
    architectures = hf.get("architectures") or []
    family = next((SUPPORTED_ARCHITECTURES[a] for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
    if family is None:
        raise ValueError(
            f"unsupported architecture {architectures or hf.get('model_type')!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    heads = hf["num_attention_heads"]
    # transformers 5 writes `rope_parameters` (rope_type, rope_theta, scaling keys)
    # and may omit `rope_scaling`.
    rope_scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or None
    llama3 = None
    if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
        kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if kind != "llama3":
            raise ValueError(f"rope_scaling type {kind!r} is not supported; only llama3 scaling is")
        llama3 = {
            "factor": float(rope_scaling["factor"]),
            "low_freq_factor": float(rope_scaling.get("low_freq_factor", 1.0)),
            "high_freq_factor": float(rope_scaling.get("high_freq_factor", 4.0)),
            "original_max_position_embeddings": float(
                rope_scaling.get("original_max_position_embeddings", 8192)
            ),
        }
    return ModelSpec(
        family=family,
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        vocab_size=hf["vocab_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
        qk_layernorm=family == "qwen3",
        llama3_rope=llama3,
        hf_config=hf,
    )


def llama3_inv_freq(
    inv_freq: torch.Tensor,
    *,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: float,
) -> torch.Tensor:
    """Llama 3.x RoPE frequencies: long wavelengths slowed by `factor`, short ones kept,
    a smooth ramp between."""
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    ramp = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    return torch.where((wavelen >= high_wavelen) & (wavelen <= low_wavelen), ramp, scaled)


def padded_vocab_size(vocab_size: int, tp: int, multiple: int = 128) -> int:
    """Round the vocabulary up so each TP rank holds an equal slice that is a multiple of `multiple`."""
    step = multiple * tp
    return int(math.ceil(vocab_size / step) * step)


def transformer_config(
    spec: ModelSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype = torch.float32,
    sequence_parallel: bool = False,
    recompute: bool = False,
    use_cpu_initialization: bool | None = None,
    init_method_std: float = 0.02,
    **overrides: Any,
) -> TransformerConfig:
    """Megatron `TransformerConfig` for `spec` at a TP/PP layout. `overrides` pass through verbatim."""
    from megatron.core.transformer import TransformerConfig

    on_cpu = not torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        num_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        ffn_hidden_size=spec.ffn_hidden_size,
        num_attention_heads=spec.num_attention_heads,
        num_query_groups=spec.num_query_groups,
        kv_channels=spec.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=spec.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=spec.qkv_bias,
        qk_layernorm=spec.qk_layernorm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel and tp > 1,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        attention_softmax_in_fp32=True,
        use_cpu_initialization=on_cpu if use_cpu_initialization is None else use_cpu_initialization,
        # The fused kernels below are CUDA-only; the unfused paths are exact on CPU and GPU alike.
        bias_activation_fusion=not on_cpu,
        masked_softmax_fusion=not on_cpu,
        bias_dropout_fusion=not on_cpu,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        recompute_granularity="full" if recompute else None,
        recompute_method="uniform" if recompute else None,
        recompute_num_layers=1 if recompute else None,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


TRANSFORMER_IMPLS = ("auto", "transformer_engine", "local")


def resolve_transformer_impl(impl: str = "auto", *, gpu: bool | None = None) -> str:
    """`transformer_engine` or `local` for `model.transformer_impl` (`gpu`: whether CUDA is visible).

    Choosing Transformer Engine, by name or by `auto` on a GPU, requires it to import: the local spec
    would run without flash attention or THD packing and run out of memory where the plan said it fits.
    """
    if impl not in TRANSFORMER_IMPLS:
        raise ValueError(
            f"model.transformer_impl must be one of {', '.join(TRANSFORMER_IMPLS)}, got {impl!r}"
        )
    if impl == "auto":
        impl = "transformer_engine" if (torch.cuda.is_available() if gpu is None else gpu) else "local"
    if impl == "transformer_engine":
        require_transformer_engine()
    return impl


def require_transformer_engine() -> None:
    """Import Transformer Engine, or raise an error that says how to install it or opt out."""
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a broken install (no libcuda, ABI mismatch) raises OSError etc.
        raise RuntimeError(
            "Transformer Engine is selected (model.transformer_impl) but does not import: "
            f"{type(error).__name__}: {error}. Install it with the gpu extra "
            "(pip install -e '.[gpu]', built for this torch and CUDA), "
            "or set model.transformer_impl=local to run Megatron's local layers on purpose"
        ) from error


def layer_spec(spec: ModelSpec, *, transformer_impl: str = "auto") -> ModuleSpec:
    """The layer spec of `resolve_transformer_impl(transformer_impl)`: Transformer Engine or local."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if resolve_transformer_impl(transformer_impl) == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=spec.qk_layernorm)
    return get_gpt_layer_local_spec(qk_layernorm=spec.qk_layernorm, normalization="RMSNorm")


def build_gpt_model(
    spec: ModelSpec,
    config: TransformerConfig,
    *,
    padded_vocab: int | None = None,
    transformer_impl: str = "auto",
    max_sequence_length: int | None = None,
    device: torch.device | None = None,
) -> GPTModel:
    """This rank's pipeline stage of the GPT model (parallel state must be initialized), on `device`
    (default: `distributed.compute_device()`)."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from rest_megatron.distributed import compute_device

    tp = config.tensor_model_parallel_size
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(spec, transformer_impl=transformer_impl),
        vocab_size=padded_vocab or padded_vocab_size(spec.vocab_size, tp),
        max_sequence_length=max_sequence_length or spec.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=spec.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(spec.rope_theta),
    )
    if spec.llama3_rope is not None:
        # Megatron's own llama3 scaling hard-codes the shape parameters; set the exact frequencies.
        rotary = model.rotary_pos_emb
        rotary.inv_freq = llama3_inv_freq(rotary.inv_freq, **spec.llama3_rope)
    return model.to(device or compute_device())
