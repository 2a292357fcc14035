"""Megatron DDP, optimizer and LR schedule for a policy model.

`wrap_ddp` puts the model under megatron-core's `DistributedDataParallel` (contiguous grad buffers,
grad reduction over the DP group when the pipeline schedule finishes), and `build_optimizer` returns
megatron-core's optimizer (Adam with global-norm clipping; the distributed optimizer when the DDP
wrapper shards for it) plus its `OptimizerParamScheduler`. Both are used unchanged on CPU (gloo) and
GPU (NCCL). Their settings are the recipe's own `OptimizerConfig`.
"""

from __future__ import annotations

import torch
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import MegatronOptimizer, get_megatron_optimizer
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from rest_megatron.config import OptimizerConfig


def wrap_ddp(model: torch.nn.Module, *, use_distributed_optimizer: bool = False) -> DistributedDataParallel:
    """Wrap one model chunk in megatron-core DDP and hook up the schedule's grad finalization."""
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


def lr_schedule_steps(optimizer: OptimizerConfig, *, updates_per_step: int = 1) -> int:
    """Optimizer updates the LR schedule spans: `num_steps` training steps of `updates_per_step` updates
    each (mini-batches × PPO epochs), and always past the warmup."""
    return max(optimizer.num_steps * updates_per_step, optimizer.num_warmup_steps + 1)


def build_optimizer(
    model_chunks: list[DistributedDataParallel], optimizer: OptimizerConfig, *, updates_per_step: int = 1
) -> tuple[MegatronOptimizer, OptimizerParamScheduler]:
    """megatron-core optimizer and LR/WD scheduler for DDP-wrapped `model_chunks`.

    Whether the optimizer is the distributed one is the DDP wrapper's choice: its grad buffers are
    laid out for exactly one of the two.
    """
    config = model_chunks[0].config
    megatron_optimizer = get_megatron_optimizer(
        MegatronOptimizerConfig(
            optimizer="adam",
            lr=optimizer.lr,
            min_lr=optimizer.min_lr,
            weight_decay=optimizer.weight_decay,
            adam_beta1=optimizer.adam_beta1,
            adam_beta2=optimizer.adam_beta2,
            adam_eps=optimizer.adam_eps,
            clip_grad=optimizer.clip_grad,
            bf16=config.bf16,
            fp16=config.fp16,
            params_dtype=config.params_dtype,
            use_distributed_optimizer=model_chunks[0].ddp_config.use_distributed_optimizer,
        ),
        model_chunks,
    )
    decay_steps = lr_schedule_steps(optimizer, updates_per_step=updates_per_step)
    cosine = optimizer.lr_schedule == "cosine"
    scheduler = OptimizerParamScheduler(
        megatron_optimizer,
        init_lr=0.0 if optimizer.num_warmup_steps else optimizer.lr,
        max_lr=optimizer.lr,
        min_lr=optimizer.min_lr if cosine else optimizer.lr,
        lr_warmup_steps=optimizer.num_warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style="cosine" if cosine else "constant",
        start_wd=optimizer.weight_decay,
        end_wd=optimizer.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
    )
    return megatron_optimizer, scheduler
