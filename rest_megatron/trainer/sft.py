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


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a scalar over the data-parallel group (the denominator of a step-wide mean)."""
    from megatron.core import parallel_state

    total = value.detach().double().clone()
    dist.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return total


def replica_loss_sum(losses: list[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """The step's summed token loss over every data-parallel replica, on every rank (float64, on `device`).

    `losses` are the schedule's per-micro-batch outputs, present on the last pipeline stage only.
    """
    from megatron.core import parallel_state

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage():
        loss_sum += sum(d["loss_sum"].double() for d in losses)
    # Each DP replica's last stage holds its share (once per TP rank); sum them on every rank.
    dist.all_reduce(loss_sum)
    return loss_sum / parallel_state.get_tensor_model_parallel_world_size()


def sft_train_step(
    model, optimizer, scheduler, microbatches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """One optimizer step over `microbatches` (dicts of tokens, labels, loss_mask, all [B, S])."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    started = time.perf_counter()
    num_tokens = global_sum(sum(mb["loss_mask"].sum() for mb in microbatches))
    undo_averaging = len(microbatches) * parallel_state.get_data_parallel_world_size()
    micro_batch_size, seq_length = microbatches[0]["tokens"].shape

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        positions = torch.arange(batch["tokens"].shape[1], device=batch["tokens"].device).expand_as(
            batch["tokens"]
        )
        per_token_ce = model(batch["tokens"], positions, None, labels=batch["labels"])  # [B, S]

        def loss_func(output: torch.Tensor):
            loss = (output.float() * batch["loss_mask"]).sum() / num_tokens.float()
            return loss * undo_averaging, {"loss_sum": (loss * num_tokens.float()).detach().clone()}

        return per_token_ce, loss_func

    model.zero_grad_buffer()
    optimizer.zero_grad()
    losses = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(microbatches),
        model=[model],
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=False,
    )
    update_ok, grad_norm, _ = optimizer.step()
    scheduler.step(increment=1)
    loss_sum = replica_loss_sum(losses, num_tokens.device)
    elapsed = time.perf_counter() - started
    return {
        "loss": float(loss_sum / num_tokens),
        "grad_norm": float(grad_norm or 0.0),
        "lr": optimizer.param_groups[0]["lr"],
        "update_ok": bool(update_ok),
        "tokens_per_s": float(num_tokens) / elapsed,
    }
