"""Per-GPU memory of the Megatron trainer and of one rollout server: pure arithmetic, bytes out.

Trainer, per GPU, on the worst pipeline stage (Megatron mixed precision; Adam):

| part        | bytes                                                                                   |
|-------------|-----------------------------------------------------------------------------------------|
| parameters  | P_gpu × dtype bytes (2 in bf16)                                                         |
| gradients   | P_gpu × 4: Megatron DDP accumulates main grads in fp32 (`grad_reduce_in_fp32=True`)    |
| optimizer   | P_gpu × 12 (fp32 master copy + Adam m, v), ÷ dp with the distributed optimizer; 8 in fp32 |
|             | (no master copy)                                                                        |
| activations | per layer, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large        |
|             | Transformer Models", Table 2), with s tokens, b micro-batch, h hidden, a heads, t = TP: |
|             |   TP only:  s·b·h·(10 + 24/t) + 5·a·s²·b/t                                                |
|             |   TP + SP:  s·b·h·34/t        + 5·a·s²·b/t                                                |
|             |   full recompute: 2·s·b·h (÷ t with SP) kept per layer, plus one layer recomputed in full|
|             | scaled by dtype bytes / 2 (the constants assume 2-byte activations). The 5·a·s²·b term is |
|             | the materialized attention scores; flash/fused attention (the Transformer Engine spec    |
|             | on GPU) never stores them, so `flash_attention=True` drops it. The first pipeline stage  |
|             | holds min(pp, micro-batches) micro-batches in flight (1F1B), the last stage one.         |
| output head | the fused op (ops/fused_output.py): one [C, V/TP] chunk in the compute dtype plus its    |
|             | fp32 copy, and four fp32 [T] vectors; the unfused head would hold [T, V/TP] logits in the |
|             | compute dtype and in fp32 (the softmax kept for backward), T = b·s tokens.               |

Sanity check of the 34: for these SwiGLU/GQA/RMSNorm models without dropout the stored tensors per
layer are s·b·(8h + 4·a·d + 4·g·d + 6·ffn) bytes in bf16, which is 29-39·s·b·h for the four recipe
models, so the classic constant stands in well. Norm weights are counted unsharded; biases are ignored
except the Qwen2 QKV bias. Not modelled: the CUDA context, NCCL buffers and allocator fragmentation
(that is what the planner's headroom is for), and the no-grad old-policy pass (smaller than training).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The shape facts memory depends on (read from a HF config by `Architecture.from_hf`)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    qk_layernorm: bool = False

    @classmethod
    def from_spec(cls, spec) -> Architecture:
        """From `rest_megatron.model.builder.ModelSpec` (whose fields these are a subset of), so HF configs
        are read in one place only."""
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls)})

    def sharded_layer_params(self) -> int:
        """Parameters of one transformer layer that TP splits: QKV, attention output, SwiGLU MLP."""
        h, d, a, g = self.hidden_size, self.head_dim, self.num_attention_heads, self.num_query_groups
        attention = h * d * (2 * a + 2 * g) + ((a + 2 * g) * d if self.qkv_bias else 0)
        return attention + 3 * h * self.ffn_hidden_size

    def replicated_layer_params(self) -> int:
        """Parameters of one layer every TP rank holds whole: the two RMSNorms and the q/k norms."""
        return 2 * self.hidden_size + (2 * self.head_dim if self.qk_layernorm else 0)

    def num_parameters(self) -> int:
        """Total parameters with the unpadded vocabulary (what the model card counts)."""
        layer = self.sharded_layer_params() + self.replicated_layer_params()
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embeddings + self.hidden_size


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A trainer layout: Megatron parallel sizes and the memory savers."""

    tp: int
    pp: int
    dp: int
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    recompute: bool = False

    @property
    def name(self) -> str:
        return f"tp{self.tp} pp{self.pp} dp{self.dp}"


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What one trainer GPU processes: micro-batch shape, dtype and the output-head chunk."""

    micro_batch_size: int
    seq_length: int
    num_microbatches: int
    """Micro-batches per optimizer update on one DP rank (bounds the pipeline's in-flight count)."""
    dtype: str = "bfloat16"
    padded_vocab_multiple: int = 128
    """`model.padded_vocab_multiple`: the vocabulary is padded to a multiple of this × TP."""
    head_chunk: int = 1024
    """Rows of the fused output head (`build_actor`'s `chunk_size`)."""
    flash_attention: bool = True
    reference_model: bool = False
    """A frozen reference policy is held too (`algorithm.kl_coef` > 0): the stage's weights once more, in
    the compute dtype, with no gradients or optimizer state (`trainer/actor.py` `build_reference`)."""


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Bytes on one GPU of one pipeline stage."""

    stage: str
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    head: int
    full_logits_head: int
    """What the head would take unfused (for comparison; not part of `total`)."""
    reference: int = 0
    """The frozen reference policy's weights of this stage (0 without KL)."""

    @property
    def total(self) -> int:
        return (
            self.parameters + self.gradients + self.optimizer + self.activations + self.head + self.reference
        )


def padded_vocab_size(vocab_size: int, tp: int, multiple: int) -> int:
    """Megatron's padded vocabulary, as `model.builder.padded_vocab_size` (kept torch-free here)."""
    step = multiple * tp
    return -(-vocab_size // step) * step


def stage_parameters(arch: Architecture, layout: Layout, work: Workload, *, first: bool, last: bool) -> int:
    """Parameters on one GPU of a pipeline stage (tied embeddings are held by both end stages when pp > 1)."""
    tp = layout.tp
    padded_vocab = padded_vocab_size(arch.vocab_size, tp, work.padded_vocab_multiple)
    layers = arch.num_layers // layout.pp
    count = layers * (arch.sharded_layer_params() // tp + arch.replicated_layer_params())
    vocab_shard = padded_vocab // tp * arch.hidden_size
    if first:
        count += vocab_shard
    if last:
        count += arch.hidden_size  # final norm
        if not (first and arch.tie_word_embeddings):
            count += vocab_shard
    return count


def optimizer_bytes_per_param(dtype: str, dp: int, distributed: bool) -> float:
    """Adam state: fp32 master weights (not in fp32 training) and the two fp32 moments."""
    state = 8 + (0 if dtype == "float32" else 4)
    return state / dp if distributed else state


def layer_activation_bytes(arch: Architecture, layout: Layout, work: Workload) -> int:
    """Stored activations of one layer for one micro-batch without recomputation (Korthikanti Table 2)."""
    s, b, h, t = work.seq_length, work.micro_batch_size, arch.hidden_size, layout.tp
    per_token = 34 / t if layout.sequence_parallel else 10 + 24 / t
    scores = 0 if work.flash_attention else 5 * arch.num_attention_heads * s * s * b / t
    return int((s * b * h * per_token + scores) * DTYPE_BYTES[work.dtype] / 2)


def stage_activation_bytes(arch: Architecture, layout: Layout, work: Workload, *, first: bool) -> int:
    """Activations of one pipeline stage: its layers × micro-batches in flight (1F1B)."""
    layers = arch.num_layers // layout.pp
    in_flight = min(layout.pp, work.num_microbatches) if first else 1
    full_layer = layer_activation_bytes(arch, layout, work)
    if not layout.recompute:
        return in_flight * layers * full_layer
    shard = layout.tp if layout.sequence_parallel else 1
    kept = (
        2 * work.seq_length * work.micro_batch_size * arch.hidden_size // shard * DTYPE_BYTES[work.dtype] // 2
    )
    return in_flight * layers * kept + full_layer  # one layer's activations exist again during its backward


def head_bytes(arch: Architecture, layout: Layout, work: Workload, *, fused: bool) -> int:
    """Output-head memory of one micro-batch: a [C, V/TP] chunk (fused) or [T, V/TP] logits (unfused)."""
    tokens = work.seq_length * work.micro_batch_size
    rows = min(work.head_chunk, tokens) if fused else tokens
    per_element = DTYPE_BYTES[work.dtype] + 4  # compute-dtype logits and their fp32 copy
    stats = 4 * 4 * tokens if fused else 0  # M, log S, H, Σπ² in fp32
    vocab_shard = padded_vocab_size(arch.vocab_size, layout.tp, work.padded_vocab_multiple) // layout.tp
    return rows * vocab_shard * per_element + stats


def estimate_stage(
    arch: Architecture, layout: Layout, work: Workload, *, first: bool, last: bool
) -> MemoryEstimate:
    """Per-GPU bytes of one pipeline stage."""
    params = stage_parameters(arch, layout, work, first=first, last=last)
    dtype = work.dtype
    return MemoryEstimate(
        stage="only" if first and last else ("first" if first else "last"),
        parameters=params * DTYPE_BYTES[dtype],
        gradients=params * 4,
        optimizer=int(params * optimizer_bytes_per_param(dtype, layout.dp, layout.distributed_optimizer)),
        activations=stage_activation_bytes(arch, layout, work, first=first),
        head=head_bytes(arch, layout, work, fused=True) if last else 0,
        full_logits_head=head_bytes(arch, layout, work, fused=False) if last else 0,
        reference=params * DTYPE_BYTES[dtype] if work.reference_model else 0,
    )


def estimate(arch: Architecture, layout: Layout, work: Workload) -> MemoryEstimate:
    """Per-GPU bytes on the stage that needs the most (the only stage when pp = 1)."""
    if layout.pp == 1:
        return estimate_stage(arch, layout, work, first=True, last=True)
    stages = [
        estimate_stage(arch, layout, work, first=True, last=False),
        estimate_stage(arch, layout, work, first=False, last=True),
    ]
    return max(stages, key=lambda e: e.total)


@dataclass(frozen=True, kw_only=True)
class RolloutEstimate:
    """One inference server GPU: weights, KV cache pool and what the pool holds."""

    weights: int
    kv_bytes_per_token: int
    kv_pool: int
    """Bytes left for the KV cache: mem_fraction_static × GPU memory − weights (may be negative)."""

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_pool) // self.kv_bytes_per_token


def estimate_rollout(
    arch: Architecture, *, server_tp: int, gpu_bytes: int, mem_fraction: float, dtype: str = "bfloat16"
) -> RolloutEstimate:
    """SGLang-style memory of one server GPU: TP-sharded weights, then the KV pool in the static fraction."""
    weights = arch.num_parameters() * DTYPE_BYTES[dtype] // server_tp
    kv_heads = max(1, arch.num_query_groups // server_tp)  # KV heads are replicated once TP exceeds them
    kv_per_token = 2 * arch.num_layers * kv_heads * arch.head_dim * DTYPE_BYTES[dtype]
    return RolloutEstimate(
        weights=weights, kv_bytes_per_token=kv_per_token, kv_pool=int(mem_fraction * gpu_bytes) - weights
    )
