"""The README's demo until the RL loop lands: SFT of a tiny Qwen3 tool caller on Megatron, TP=2 on CPU.

    torchrun --standalone --nproc-per-node 2 -m rest_megatron.demo --tp 2

It builds the local tiny tokenizer and a tiny Qwen3-architecture Megatron model, renders gold
tool-calling conversations of the tiny calculator task with the chat template, trains on the
assistant tokens with Megatron's pipeline schedule, DDP and Adam, and finally scores gold
conversations of the held-out split to report next-token accuracy on the assistant tokens (tool-call
JSON, arguments and answers) before and after training.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from rest_megatron.assets import tiny_model_dir
from rest_megatron.data.sft import collate, tokenize_for_sft
from rest_megatron.data.tiny_task import demonstration, make_tiny_task
from rest_megatron.distributed import ParallelLayout, init_distributed, init_model_parallel
from rest_megatron.model.builder import (
    build_gpt_model,
    load_hf_config,
    model_spec_from_hf,
    transformer_config,
)
from rest_megatron.trainer.optimizer import OptimizerSettings, build_optimizer, wrap_ddp
from rest_megatron.trainer.sft import sft_train_step


def _log(message: str) -> None:
    if dist.get_rank() == 0:
        print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


@torch.no_grad()
def assistant_token_accuracy(model: torch.nn.Module, microbatches: list[dict[str, torch.Tensor]]) -> float:
    """Teacher-forced next-token accuracy on assistant tokens (PP=1; argmax over the TP-gathered vocab)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    model.eval()
    hits, total = 0.0, 0.0
    for batch in microbatches:
        positions = torch.arange(batch["tokens"].shape[1]).expand_as(batch["tokens"])
        logits = gather_from_tensor_model_parallel_region(model(batch["tokens"], positions, None))
        correct = (logits.argmax(-1) == batch["labels"]).float()
        hits += float((correct * batch["loss_mask"]).sum())
        total += float(batch["loss_mask"].sum())
    model.train()
    return hits / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tp", type=int, default=2, help="tensor-parallel size (must divide the world size)")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps")
    parser.add_argument("--num-samples", type=int, default=32, help="training conversations")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    init_distributed()
    init_model_parallel(ParallelLayout(tp=args.tp, pp=1), seed=0)
    model_dir = tiny_model_dir("tiny-qwen3")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = model_spec_from_hf(load_hf_config(model_dir))
    _log(f"tiny-qwen3 ({spec.num_layers} layers, hidden {spec.hidden_size}, vocab {spec.vocab_size}) "
         f"on {dist.get_world_size()} CPU ranks, TP={args.tp}")

    model = wrap_ddp(build_gpt_model(spec, transformer_config(spec, tp=args.tp)))
    optimizer, scheduler = build_optimizer(
        [model], OptimizerSettings(lr=args.lr, num_steps=args.steps, num_warmup_steps=5, lr_schedule="cosine")
    )
    samples = make_tiny_task(seed=0, num_samples=args.num_samples, split="train")
    examples = [tokenize_for_sft(tokenizer, demonstration(s), s.tools) for s in samples]
    microbatches = collate(examples, pad_id=tokenizer.pad_token_id, micro_batch_size=args.micro_batch_size)
    held_out = make_tiny_task(seed=0, num_samples=16, split="eval")
    eval_batches = collate(
        [tokenize_for_sft(tokenizer, demonstration(s), s.tools) for s in held_out],
        pad_id=tokenizer.pad_token_id,
        micro_batch_size=args.micro_batch_size,
    )
    _log(f"{len(examples)} gold conversations, {sum(int(m.sum()) for _, m in examples)} assistant tokens")
    _log(f"held-out assistant-token accuracy before training: {assistant_token_accuracy(model.module, eval_batches):.1%}")

    for step in range(1, args.steps + 1):
        metrics = sft_train_step(model, optimizer, scheduler, microbatches)
        if step == 1 or step % 10 == 0 or step == args.steps:
            _log(f"step {step:3d}  loss {metrics['loss']:.4f}  grad_norm {metrics['grad_norm']:.3f}  "
                 f"lr {metrics['lr']:.2e}  {metrics['tokens_per_s']:.0f} tok/s")

    _log(f"held-out assistant-token accuracy after training:  {assistant_token_accuracy(model.module, eval_batches):.1%}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
