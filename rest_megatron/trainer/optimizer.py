"""Megatron DDP, optimizer and LR schedule for a policy model.

`wrap_ddp` puts the model under megatron-core's `DistributedDataParallel` (contiguous grad buffers,
grad reduction over the DP group when the pipeline schedule finishes), and `build_optimizer` returns
megatron-core's optimizer (Adam with global-norm clipping; the distributed optimizer when asked)
plus its `OptimizerParamScheduler`. Both are used unchanged on CPU (gloo) and GPU (NCCL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    """What the optimizer needs, independent of the recipe schema."""

    lr: float
    """Peak learning rate."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    lr_schedule: str = "constant"
    """constant or cosine (after a linear warmup)."""
    num_warmup_steps: int = 0
    """Linear warmup steps from 0 to `lr`."""
    num_steps: int = 1
    """Total optimizer steps (the cosine decays over them)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW)."""
    adam_beta1: float = 0.9
    """Adam β1."""
    adam_beta2: float = 0.999
    """Adam β2."""
    adam_eps: float = 1e-8
    """Adam ε."""
    clip_grad: float = 1.0
    """Global gradient-norm clip over all TP/PP/DP ranks; 0 disables."""
    use_distributed_optimizer: bool = False
    """Shard optimizer states over DP (ZeRO-1); meant for GPU runs."""


def wrap_ddp(model: torch.nn.Module, *, use_distributed_optimizer: bool = False) -> torch.nn.Module:
    """Wrap one model chunk in megatron-core DDP and hook up the schedule's grad finalization."""
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=use_distributed_optimizer,
        # Keep the average exact and layout-independent: divide once, after the sum.
        average_in_collective=False,
    )
    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
    model.config.finalize_model_grads_func = finalize_model_grads
    model.config.no_sync_func = ddp.no_sync
    return ddp


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The GPT model inside a DDP wrapper (state dicts are keyed without the wrapper's `module.`)."""
    return model.module if hasattr(model, "module") else model


def build_optimizer(model_chunks: list[torch.nn.Module], settings: OptimizerSettings):
    """megatron-core optimizer and LR/WD scheduler for DDP-wrapped `model_chunks`."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    config = model_chunks[0].config
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=settings.lr,
            min_lr=settings.min_lr,
            weight_decay=settings.weight_decay,
            adam_beta1=settings.adam_beta1,
            adam_beta2=settings.adam_beta2,
            adam_eps=settings.adam_eps,
            clip_grad=settings.clip_grad,
            bf16=config.bf16,
            fp16=config.fp16,
            params_dtype=config.params_dtype,
            use_distributed_optimizer=settings.use_distributed_optimizer,
        ),
        model_chunks,
    )
    decay_steps = max(settings.num_steps, settings.num_warmup_steps + 1)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if settings.num_warmup_steps else settings.lr,
        max_lr=settings.lr,
        min_lr=settings.min_lr if settings.lr_schedule == "cosine" else settings.lr,
        lr_warmup_steps=settings.num_warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style="cosine" if settings.lr_schedule == "cosine" else "constant",
        start_wd=settings.weight_decay,
        end_wd=settings.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
    )
    return optimizer, scheduler
