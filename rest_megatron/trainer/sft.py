"""Supervised fine-tuning step on Megatron: masked next-token cross-entropy under the pipeline schedule.

The loss is a token mean with ONE denominator for the whole optimizer step (every micro-batch and
every data-parallel rank), so the gradient does not depend on how the batch is split. Megatron's
schedule divides each micro-batch loss by the number of micro-batches and DDP averages over the DP
group; `loss_func` multiplies both factors back out so that what is differentiated is exactly
Σ_step mask·CE / Σ_step mask.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel
from megatron.core.optimizer import MegatronOptimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from rest_megatron.trainer.batching import MicroBatch
from rest_megatron.trainer.schedule import LossFunc, LossOutputs, train_update


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a scalar over the data-parallel group (the denominator of a step-wide mean)."""
    total = value.detach().double().clone()
    dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return total


def replica_loss_sum(losses: list[LossOutputs], device: torch.device) -> torch.Tensor:
    """The step's summed token loss over every data-parallel replica, on every rank (float64, on `device`).

    `losses` are the schedule's per-micro-batch outputs, present on the last pipeline stage only.
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage():
        loss_sum += sum(d["loss_sum"].double() for d in losses)
    # Each DP replica's last stage holds its share (once per TP rank); sum them on every rank.
    dist.all_reduce(loss_sum)
    return loss_sum / parallel_state.get_tensor_model_parallel_world_size()


def sft_train_step(
    model: DistributedDataParallel,
    optimizer: MegatronOptimizer,
    scheduler: OptimizerParamScheduler,
    microbatches: list[MicroBatch],
) -> dict[str, float]:
    """One optimizer step over `microbatches` (dicts of tokens, labels, loss_mask, all [B, S])."""
    started = time.perf_counter()
    num_tokens = global_sum(sum(mb["loss_mask"].sum() for mb in microbatches))
    undo_averaging = len(microbatches) * parallel_state.get_data_parallel_world_size()

    def forward_step(batch: MicroBatch, model: torch.nn.Module) -> tuple[torch.Tensor, LossFunc]:
        tokens = batch["tokens"]
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        per_token_ce = model(tokens, positions, None, labels=batch["labels"])  # [B, S]

        def loss_func(output: torch.Tensor) -> tuple[torch.Tensor, LossOutputs]:
            loss = (output.float() * batch["loss_mask"]).sum() / num_tokens.float()
            return loss * undo_averaging, {"loss_sum": (loss * num_tokens.float()).detach().clone()}

        return per_token_ce, loss_func

    losses, update_ok, grad_norm = train_update(model, optimizer, scheduler, microbatches, forward_step)
    loss_sum = replica_loss_sum(losses, num_tokens.device)
    elapsed = time.perf_counter() - started
    return {
        "loss": float(loss_sum / num_tokens),
        "grad_norm": grad_norm,
        "lr": optimizer.param_groups[0]["lr"],
        "update_ok": update_ok,
        "tokens_per_s": float(num_tokens) / elapsed,
    }
