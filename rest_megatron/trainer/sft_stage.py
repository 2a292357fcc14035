"""The SFT warm start: train on gold demonstrations so RL starts from a model that emits valid calls.

It uses the RL actor's model (same Megatron layout, same DDP wrapper) with its own Adam and cosine
schedule, then leaves the RL optimizer untouched: RL starts with fresh moments at its own LR.
"""

from __future__ import annotations

import random

from megatron.core import parallel_state

from rest_megatron.config import OptimizerConfig
from rest_megatron.data.sft import collate, tokenize_for_sft
from rest_megatron.data.tiny_task import demonstration, make_tiny_task
from rest_megatron.trainer.batching import to_device
from rest_megatron.trainer.optimizer import build_optimizer
from rest_megatron.trainer.runtime import Runtime
from rest_megatron.trainer.sft import sft_train_step


def sft_warm_start(rt: Runtime) -> None:
    """Run `sft.num_steps` optimizer steps of masked cross-entropy on the task's demonstrations.

    Each step draws `sft.micro_batch_size` conversations per DP rank from a pool of `sft.num_samples`:
    many small steps teach a tiny model the call format much faster than a few large ones.
    """
    cfg = rt.config
    if cfg.data.train_path != "tiny-task":
        raise ValueError(
            "sft.num_steps > 0 needs gold demonstrations, which only data.train_path=tiny-task has; "
            "set sft.num_steps=0 or start from an SFT checkpoint"
        )
    samples = make_tiny_task(cfg.data.seed, cfg.sft.num_samples, "train")
    examples = [tokenize_for_sft(rt.tokenizer, demonstration(s), s.tools) for s in samples]
    dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    rng = random.Random(cfg.data.seed)  # the same draws on every rank; each takes its share
    optimizer, scheduler = build_optimizer(
        [rt.actor.model],
        OptimizerConfig(
            num_steps=cfg.sft.num_steps,
            lr=cfg.sft.lr,
            num_warmup_steps=min(5, cfg.sft.num_steps - 1),
            lr_schedule="cosine",
            clip_grad=cfg.optimizer.clip_grad,
        ),
    )
    for step in range(1, cfg.sft.num_steps + 1):
        drawn = rng.sample(examples, min(len(examples), cfg.sft.micro_batch_size * dp))
        local = drawn[rank::dp]
        microbatches = [
            to_device(mb, rt.device)
            for mb in collate(local, pad_id=rt.tokenizer.pad_token_id, micro_batch_size=len(local))
        ]
        metrics = sft_train_step(rt.actor.model, optimizer, scheduler, microbatches)
        if rt.logger is not None and (step % 10 == 0 or step in (1, cfg.sft.num_steps)):
            rt.logger.console.print(
                f"sft step {step}/{cfg.sft.num_steps} loss {metrics['loss']:.4f} "
                f"grad_norm {metrics['grad_norm']:.3f} {metrics['tokens_per_s']:.0f} tok/s"
            )
    # The RL optimizer's fp32 main params (bf16/fp16) still hold the pre-SFT weights: re-sync them.
    rt.actor.optimizer.reload_model_params()
