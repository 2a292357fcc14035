"""Megatron's pipeline schedule over a list of micro-batches, for the RL and the SFT train steps.

A forward step here takes the micro-batch itself and returns the model output with the loss function
of that micro-batch; the schedule runs it on every pipeline stage (forward only, or 1F1B with the
backward) and returns the loss functions' outputs, which exist on the last stage only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from megatron.core.distributed import DistributedDataParallel
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func

from rest_megatron.trainer.batching import MicroBatch

LossOutputs = dict[str, torch.Tensor]
"""What a loss function reports next to its loss (summed or reduced by the caller)."""
LossFunc = Callable[[torch.Tensor], tuple[torch.Tensor, LossOutputs]]
ForwardStep = Callable[[MicroBatch, torch.nn.Module], tuple[torch.Tensor, LossFunc]]


def run_schedule(
    model: torch.nn.Module, microbatches: list[MicroBatch], forward_step: ForwardStep, *, forward_only: bool
) -> list[LossOutputs]:
    """Run `forward_step` on every micro-batch (all [B, S] alike: the pipeline sends fixed shapes)."""

    def megatron_forward_step(
        data_iterator: Iterator[MicroBatch], model: torch.nn.Module
    ) -> tuple[torch.Tensor, LossFunc]:
        return forward_step(next(data_iterator), model)

    micro_batch_size, seq_length = microbatches[0]["tokens"].shape
    return get_forward_backward_func()(
        forward_step_func=megatron_forward_step,
        data_iterator=iter(microbatches),
        model=[model],
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )


def train_update(
    model: DistributedDataParallel,
    optimizer: MegatronOptimizer,
    scheduler: OptimizerParamScheduler,
    microbatches: list[MicroBatch],
    forward_step: ForwardStep,
) -> tuple[list[LossOutputs], bool, float]:
    """One optimizer update from the gradients of `microbatches`; returns the loss outputs, whether the
    update was applied (fp16 loss scaling may skip it) and the gradient norm before clipping."""
    model.zero_grad_buffer()
    optimizer.zero_grad()
    outputs = run_schedule(model, microbatches, forward_step, forward_only=False)
    update_ok, grad_norm, _ = optimizer.step()
    scheduler.step(increment=1)
    return outputs, bool(update_ok), float(grad_norm or 0.0)
