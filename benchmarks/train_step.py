"""Train-step throughput and peak memory of the Megatron policy actor: TP=1 against TP=2, same run.

    python benchmarks/train_step.py                  # tiny-qwen3 on CPU (gloo)
    python benchmarks/train_step.py --rows 16 --seq 256 --steps 5

Each layout runs the full ResT step (old-policy token stats, paper weights, PPO-clip backward, Adam)
on the same global batch; the first step is a warm-up. Prints tokens/s and the peak bytes allocated
through torch's allocator per rank, and the TP=2 / TP=1 ratios. On a GPU host the same script runs
on NCCL; pass `--model` with a HF config.json directory (e.g. a ~1B model) to size it up.
"""

from __future__ import annotations

import argparse
import time

import torch

from rest_megatron.testing.gloo import GlooPool


def _run(tp: int, model_dir: str | None, rows: int, seq: int, micro: int, steps: int) -> dict[str, float]:
    from rest_megatron.algo.regions import NUM_REGIONS
    from rest_megatron.algo.weights import get_token_weights
    from rest_megatron.assets import tiny_hf_config
    from rest_megatron.config import AlgorithmConfig, OptimizerConfig
    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.model.builder import load_hf_config, model_spec_from_hf
    from rest_megatron.testing.memory import peak_allocated_bytes
    from rest_megatron.trainer.actor import build_actor

    init_model_parallel(ParallelLayout(tp=tp, pp=1), seed=0)
    spec = model_spec_from_hf(load_hf_config(model_dir) if model_dir else tiny_hf_config("tiny-qwen3"))
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-5), tp=tp)
    gen = torch.Generator().manual_seed(0)
    from megatron.core import parallel_state

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    tokens = torch.randint(0, spec.vocab_size, (rows, seq + 1), generator=gen)
    local = slice(dp_rank * rows // dp, (dp_rank + 1) * rows // dp)
    batch = []
    for start in range(local.start, local.stop, micro):
        part = slice(start, min(start + micro, local.stop))
        n = part.stop - part.start
        batch.append(
            {
                "tokens": tokens[part, :-1],
                "labels": tokens[part, 1:],
                "loss_mask": torch.ones(n, seq),
                "region_mask": 1 << torch.randint(0, NUM_REGIONS, (n, seq), generator=gen),
                "advantages": torch.randn(n, 1, generator=gen).expand(n, seq).contiguous(),
            }
        )
    paper = get_token_weights("paper")

    def step() -> None:
        for mb, st in zip(batch, actor.token_stats(batch)):
            mb["old_logprobs"] = st.logprob
            mb["weights"] = paper(
                loss_mask=mb["loss_mask"], region_mask=mb["region_mask"], step=0, collision=st.collision
            )
        actor.train_step(batch, AlgorithmConfig())

    step()  # warm-up: Adam's moments, caches
    started = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - started
    peak, _ = peak_allocated_bytes(step)  # one more step under the allocator profiler (slower, not timed)
    return {"tokens_per_s": rows * seq * steps / elapsed, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="HF model directory (default: tiny-qwen3)")
    parser.add_argument("--rows", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up)")
    args = parser.parse_args()

    results = {}
    for tp in (1, 2):
        with GlooPool(tp) as pool:
            per_rank = pool.run(_run, tp, args.model, args.rows, args.seq, args.micro_batch_size, args.steps)
        results[tp] = {
            "tokens_per_s": per_rank[0]["tokens_per_s"],
            "peak_mb": max(r["peak_mb"] for r in per_rank),
        }
    print(f"{'layout':8} {'tokens/s':>10} {'peak MB/rank':>13}")
    for tp, r in results.items():
        print(f"TP={tp:<5} {r['tokens_per_s']:10.0f} {r['peak_mb']:13.1f}")
    print(
        f"ratio TP2/TP1: tokens/s {results[2]['tokens_per_s'] / results[1]['tokens_per_s']:.2f}, "
        f"peak memory per rank {results[2]['peak_mb'] / results[1]['peak_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
