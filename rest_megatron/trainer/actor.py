"""The Megatron policy actor: forward-only token statistics and the ResT train step, under TP/PP/DP.

The model never produces logits: on the last pipeline stage it runs under
`ops.megatron_head.hidden_states_instead_of_logits`, so it returns its final hidden states, and
`model_token_stats` computes log π(y), H and Σπ² chunk by chunk from those states and the
vocab-sharded output weight.

    microbatches ──► token_stats()  (no grad, old/ref policy)      ──► [B, S] stats on every rank
    microbatches ──► train_step()   (pipeline schedule, backward)  ──► optimizer step, metrics

A micro-batch is a dict of [B, S] tensors aligned to the predicted token: `tokens` (inputs),
`labels` (next tokens), `loss_mask` (1 where the policy sampled the label), and for training also
`old_logprobs`, `advantages` (per token), `weights` (ResT token weights) and optionally
`ref_logprobs`.

Loss scaling: Megatron's schedule divides each micro-batch loss by the number of micro-batches and
DDP averages gradients over the DP group. The aggregations of `algo/aggregation.py` return each
micro-batch's *contribution* to an update's loss that is a SUM over micro-batches and DP ranks with one
denominator per optimizer update (see `train_step`), so the loss handed to Megatron is multiplied by
both factors to cancel them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.packed_seq_params import PackedSeqParams

from rest_megatron.algo.aggregation import get_aggregation
from rest_megatron.algo.policy_loss import get_policy_loss, policy_loss_params, valid_mask
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.convert.from_hf import load_hf_into_model
from rest_megatron.convert.hf_files import HFWeights
from rest_megatron.distributed import compute_device
from rest_megatron.model.builder import ModelSpec, build_gpt_model, padded_vocab_size, transformer_config
from rest_megatron.ops.megatron_head import hidden_states_instead_of_logits, model_token_stats
from rest_megatron.ops.vocab_parallel import TokenStats
from rest_megatron.trainer.batching import MicroBatch
from rest_megatron.trainer.optimizer import build_optimizer, unwrap_ddp, wrap_ddp
from rest_megatron.trainer.schedule import ForwardStep, LossFunc, LossOutputs, run_schedule, train_update

LossForBatch = Callable[[torch.Tensor, MicroBatch], tuple[torch.Tensor, LossOutputs]]
"""A micro-batch's loss and reported values from the last stage's hidden states."""


class PolicyActor:
    """This rank's part of a policy: a DDP-wrapped Megatron GPT chunk, its optimizer and LR schedule."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: MegatronOptimizer | None,
        scheduler: OptimizerParamScheduler | None,
        *,
        vocab_size: int,
        chunk_size: int = 1024,
        packed_format: str = "mask",
        temperature: float = 1.0,
        device: torch.device | None = None,
    ) -> None:
        self.model = model
        self.device = device or compute_device()
        """Where micro-batches, losses and this actor's collectives live (the runtime's device)."""
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.vocab_size = vocab_size
        self.chunk_size = chunk_size
        self.packed_format = (
            packed_format  # packed rows attend via "thd" (TE, cu_seqlens) or "mask" (local spec)
        )
        # The rollout's sampling temperature: the policy that generated the data is softmax(logits / T),
        # so that is the policy whose log-probs, entropy and gradient the trainer computes (0: greedy, as 1).
        self.temperature = temperature if temperature > 0 else 1.0

    @property
    def network(self) -> torch.nn.Module:
        """The GPT model chunk itself (without the DDP wrapper): use it for state dicts."""
        return unwrap_ddp(self.model)

    # ----------------------------------------------------------------------------------------- stats
    def stats_from_hidden(
        self, hidden: torch.Tensor, labels: torch.Tensor, *, entropy_grad: bool
    ) -> TokenStats:
        """log π(labels), H, Σπ² ([B, S]) of softmax(logits / temperature) from the last stage's hidden
        states [B, S, H], differentiably. The output layer has no bias, so logits / T = (h / T)·Wᵀ."""
        if self.temperature != 1.0:
            hidden = hidden / self.temperature
        return model_token_stats(
            self.network,
            hidden,
            labels,
            vocab_size=self.vocab_size,
            chunk_size=self.chunk_size,
            entropy_grad=entropy_grad,
        )

    def _run_schedule(
        self, microbatches: list[MicroBatch], loss_for_batch: LossForBatch, *, forward_only: bool
    ) -> list[LossOutputs]:
        return run_schedule(
            self.model, microbatches, self._forward_step(loss_for_batch), forward_only=forward_only
        )

    def _forward_step(self, loss_for_batch: LossForBatch) -> ForwardStep:
        """The schedule's forward step: hidden states on the last stage, scored by `loss_for_batch`."""

        def forward_step(batch: MicroBatch, model: torch.nn.Module) -> tuple[torch.Tensor, LossFunc]:
            check_on_device(batch, self.device)
            with (
                hidden_states_instead_of_logits(self.network) if self.network.post_process else nullcontext()
            ):
                hidden = model(batch["tokens"], **self._attention_inputs(batch))  # [B, S, H] last stage
            return hidden, lambda output: loss_for_batch(output, batch)

        return forward_step

    def _attention_inputs(self, batch: MicroBatch) -> dict[str, Any]:
        """Positions and masking: causal per row, or per packed segment (THD with TE, else a mask)."""
        tokens = batch["tokens"]
        if "cu_seqlens" not in batch:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
            return {"position_ids": positions, "attention_mask": None}
        cu_seqlens = batch["cu_seqlens"].to(tokens.device)
        if self.packed_format == "thd":
            longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
            params = PackedSeqParams(
                qkv_format="thd",
                cu_seqlens_q=cu_seqlens,
                cu_seqlens_kv=cu_seqlens,
                max_seqlen_q=longest,
                max_seqlen_kv=longest,
            )
            return {
                "position_ids": batch["position_ids"],
                "attention_mask": None,
                "packed_seq_params": params,
            }
        return {
            "position_ids": batch["position_ids"],
            "attention_mask": packed_causal_mask(cu_seqlens, tokens.shape[1]),
        }

    @torch.no_grad()
    def token_stats(self, microbatches: list[MicroBatch]) -> list[TokenStats]:
        """Per-token log π(y), H and Σπ² ([B, S] each, float32) for every micro-batch, on every rank."""
        self.model.eval()
        outputs = self._run_schedule(
            microbatches,
            lambda hidden, batch: (
                hidden.new_zeros((), dtype=torch.float32),
                {"stats": self.stats_from_hidden(hidden, batch["labels"], entropy_grad=False)},
            ),
            forward_only=True,
        )
        self.model.train()
        results = []
        for index, batch in enumerate(microbatches):
            if parallel_state.is_pipeline_last_stage():
                packed = torch.stack(list(outputs[index]["stats"]))  # [3, B, S]
            else:
                packed = torch.empty(
                    (3, *batch["labels"].shape), dtype=torch.float32, device=batch["labels"].device
                )
            if parallel_state.get_pipeline_model_parallel_world_size() > 1:
                dist.broadcast(
                    packed,
                    src=parallel_state.get_pipeline_model_parallel_last_rank(),
                    group=parallel_state.get_pipeline_model_parallel_group(),
                )
            results.append(TokenStats(*packed))
        return results

    # ------------------------------------------------------------------------------------------ train
    def train_step(self, microbatches: list[MicroBatch], algorithm: AlgorithmConfig) -> dict[str, float]:
        """One optimizer update of the policy loss over `microbatches` (this rank's part of one mini-batch);
        returns the update's metrics on every rank.

        The loss denominator is the update's own: Σ m·w (aggregation's `denominator`) over all of this
        update's micro-batches on every DP rank, all-reduced before the schedule runs. A step of several
        mini-batches calls this once per mini-batch, each with its denominator, so an update's gradient
        does not depend on how its trajectories are cut into micro-batches or spread over DP ranks.
        """
        started = time.perf_counter()
        aggregation = get_aggregation(algorithm.aggregation)
        policy_loss = get_policy_loss(algorithm.policy_loss)
        params = policy_loss_params(algorithm)
        entropy_grad = algorithm.entropy_coef != 0.0
        masks = [
            valid_mask(mb["loss_mask"], mb["old_logprobs"], mb["advantages"], mb.get("ref_logprobs"))
            for mb in microbatches
        ]
        # One denominator for the whole update: every micro-batch here, every DP rank.
        denominator = sum(
            aggregation.denominator(loss_mask=m, weights=mb["weights"]) for m, mb in zip(masks, microbatches)
        )
        denominator = torch.as_tensor(denominator, dtype=torch.float64, device=self.device).clone()
        dist.all_reduce(denominator, group=parallel_state.get_data_parallel_group())
        undo_averaging = len(microbatches) * parallel_state.get_data_parallel_world_size()
        mask_of = {id(mb): m for m, mb in zip(masks, microbatches)}

        def loss_for_batch(hidden: torch.Tensor, batch: MicroBatch) -> tuple[torch.Tensor, LossOutputs]:
            stats = self.stats_from_hidden(hidden, batch["labels"], entropy_grad=entropy_grad)
            mask = mask_of[id(batch)]
            loss, metrics = policy_loss(
                logprobs=stats.logprob,
                old_logprobs=batch["old_logprobs"],
                advantages=batch["advantages"],
                loss_mask=mask,
                ref_logprobs=batch.get("ref_logprobs"),
                entropy=stats.entropy if entropy_grad else None,
                **params,
            )
            contribution = aggregation(
                loss, loss_mask=mask, weights=batch["weights"], global_denominator=denominator.to(loss.dtype)
            )
            metrics = {k: v.detach().double().clone() for k, v in metrics.items()}
            metrics["loss"] = contribution.detach().double().clone()
            metrics["entropy_sum"] = (stats.entropy.detach().double() * mask).sum()
            return contribution * undo_averaging, metrics

        outputs, update_ok, grad_norm = train_update(
            self.model, self.optimizer, self.scheduler, microbatches, self._forward_step(loss_for_batch)
        )
        metrics = self._reduce_metrics(outputs)
        if "ratio_sq" in metrics:  # spread of ρ over the update's tokens: 0 at the first update of a step
            metrics["ratio_std"] = max(metrics.pop("ratio_sq") - metrics["ratio"] ** 2, 0.0) ** 0.5
        num_tokens = sum(float(mb["loss_mask"].sum()) for mb in microbatches)
        metrics.update(
            grad_norm=grad_norm,
            lr=float(self.optimizer.param_groups[0]["lr"]),
            update_ok=float(update_ok),
            tokens_per_s=num_tokens
            * parallel_state.get_data_parallel_world_size()
            / (time.perf_counter() - started),
        )
        return metrics

    def _reduce_metrics(self, outputs: list[LossOutputs]) -> dict[str, float]:
        """Sum (max/min for ratio extremes) over micro-batches and DP ranks; share with every rank."""
        reduced: dict[str, float] = {}
        if parallel_state.is_pipeline_last_stage():
            keys = sorted(outputs[0])
            ops = {"ratio_max": (dist.ReduceOp.MAX, max), "ratio_min": (dist.ReduceOp.MIN, min)}
            for key in keys:
                op, combine = ops.get(key, (dist.ReduceOp.SUM, sum))
                value = torch.tensor(
                    combine([float(o[key]) for o in outputs]), dtype=torch.float64, device=self.device
                )
                dist.all_reduce(value, op=op, group=parallel_state.get_data_parallel_group())
                reduced[key] = float(value)
            tokens = max(reduced.get("num_tokens", 0.0), 1.0)
            for key in [k for k in keys if k.endswith("_sum")]:
                reduced[key[: -len("_sum")]] = reduced.pop(key) / tokens
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            box = [reduced]
            dist.broadcast_object_list(
                box,
                src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group(),
            )
            reduced = box[0]
        return reduced


def check_on_device(batch: MicroBatch, device: torch.device) -> None:
    """Raise unless every tensor of a micro-batch is on `device` (what the model and the loss run on)."""
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.device.type != device.type:
            raise ValueError(
                f"micro-batch tensor {key!r} is on {value.device}, the actor computes on {device}; build "
                "micro-batches with device=runtime.device (trainer/batching.py) "
                "or move them with batching.to_device"
            )


def packed_causal_mask(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """[1, 1, L, L] bool, True where attention is blocked: causal and within one packed segment.

    RoPE scores depend only on the distance between positions, so a segment attends exactly as it
    would alone, wherever it sits in the row.
    """
    segment = torch.repeat_interleave(
        torch.arange(len(cu_seqlens) - 1, device=cu_seqlens.device),
        (cu_seqlens[1:] - cu_seqlens[:-1]).long(),
        output_size=length,
    )
    causal = torch.ones(length, length, dtype=torch.bool, device=cu_seqlens.device).tril()
    return ~(causal & (segment[:, None] == segment[None, :]))[None, None]


def build_actor(
    spec: ModelSpec,
    optimizer: OptimizerConfig,
    *,
    updates_per_step: int = 1,
    use_distributed_optimizer: bool = False,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype = torch.float32,
    sequence_parallel: bool = False,
    recompute: bool = False,
    padded_vocab_multiple: int = 128,
    chunk_size: int = 1024,
    max_sequence_length: int | None = None,
    megatron_overrides: dict[str, Any] | None = None,
    temperature: float = 1.0,
    device: torch.device | None = None,
    transformer_impl: str = "auto",
) -> PolicyActor:
    """Build this rank's actor (model parallel state must be initialized for `tp`×`pp`).

    Args:
        optimizer: Adam and its LR schedule, whose horizon is `optimizer.num_steps` × `updates_per_step`.
        use_distributed_optimizer: shard optimizer states over DP (ZeRO-1); meant for GPU runs.
        device: where the model, micro-batches and collectives live (default: `distributed.compute_device()`).
        transformer_impl: `model.transformer_impl` (see `model.builder.resolve_transformer_impl`).
    """
    model = _build_model(
        spec,
        tp=tp,
        pp=pp,
        dtype=dtype,
        sequence_parallel=sequence_parallel,
        recompute=recompute,
        padded_vocab_multiple=padded_vocab_multiple,
        max_sequence_length=max_sequence_length,
        megatron_overrides=megatron_overrides,
        device=device,
        transformer_impl=transformer_impl,
    )
    model = wrap_ddp(model, use_distributed_optimizer=use_distributed_optimizer)
    megatron_optimizer, scheduler = build_optimizer([model], optimizer, updates_per_step=updates_per_step)
    packed_format = "thd" if uses_transformer_engine(model) else "mask"
    return PolicyActor(
        model,
        megatron_optimizer,
        scheduler,
        vocab_size=spec.vocab_size,
        chunk_size=chunk_size,
        packed_format=packed_format,
        temperature=temperature,
        device=device,
    )


def build_reference(spec: ModelSpec, hf_dir: str | Path, **layout: Any) -> PolicyActor:
    """The frozen reference policy of KL regularization: the same network, layout and temperature as the
    actor (`layout`: build_actor's keyword arguments but the optimizer settings), weights from the HF folder
    `hf_dir`, and no DDP, gradients or optimizer. Use only its `token_stats` (vocab-parallel, no logits);
    it runs in the actor's process groups."""
    chunk_size, temperature = layout.pop("chunk_size", 1024), layout.pop("temperature", 1.0)
    device = layout.get("device")
    model = _build_model(spec, **layout)
    load_hf_into_model(model, spec, HFWeights.open(Path(hf_dir), spec=spec))
    model.requires_grad_(False)
    return PolicyActor(
        model,
        None,
        None,
        vocab_size=spec.vocab_size,
        chunk_size=chunk_size,
        packed_format="thd" if uses_transformer_engine(model) else "mask",
        temperature=temperature,
        device=device,
    )


def _build_model(
    spec: ModelSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype = torch.float32,
    sequence_parallel: bool = False,
    recompute: bool = False,
    padded_vocab_multiple: int = 128,
    max_sequence_length: int | None = None,
    megatron_overrides: dict[str, Any] | None = None,
    device: torch.device | None = None,
    transformer_impl: str = "auto",
) -> torch.nn.Module:
    config = transformer_config(
        spec,
        tp=tp,
        pp=pp,
        dtype=dtype,
        sequence_parallel=sequence_parallel,
        recompute=recompute,
        **(megatron_overrides or {}),
    )
    return build_gpt_model(
        spec,
        config,
        padded_vocab=padded_vocab_size(spec.vocab_size, tp, padded_vocab_multiple),
        max_sequence_length=max_sequence_length,
        device=device,
        transformer_impl=transformer_impl,
    )


def uses_transformer_engine(model: torch.nn.Module) -> bool:
    """Whether the model's layers are Transformer Engine modules (the GPU spec), which take THD input."""
    return any(
        type(m).__module__.startswith("megatron.core.extensions.transformer_engine") for m in model.modules()
    )
