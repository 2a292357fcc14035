"""Per-token log π, H and Σπ² at Qwen's vocabulary: naive gather vs ours (shard, fused) vs the floor.

Every variant runs in the same launch, on the same inputs, on `--tp` real gloo ranks (one thread each):

  (a) naive:  gather the full logits on every rank (Megatron's gather_from_tensor_model_parallel_region),
              log_softmax, gather the target, entropy and Σπ² from the full [T, V] tensors (written
              lean: at most two [T, V] tensors alive, products in place)
  (b) shard:  `vocab_parallel_token_stats` on the rank's logits shard
  (c) fused:  `fused_output_token_stats` from the hidden states and the output weight shard
  (d) floor:  one torch.log_softmax over the local shard alone (not even a correct result)
  (mm)        the output-layer matmul hidden @ W_kᵀ that (a), (b) and (d) need first

Peak memory is the peak of bytes allocated per rank *during* the call above what existed before
(`rest_megatron.testing.memory.peak_allocated_bytes`: torch.profiler allocation events); the logits shard
that (a), (b) and (d) take as input is listed separately. Times are medians over `--repeats` runs of
the slowest rank: wall clock, and process CPU time, which is steadier on a machine shared with other
jobs (it leaves out time spent descheduled, and time blocked in a collective).

    python benchmarks/vocab_parallel.py                      # T=4096, V=151936, hidden 2048, TP=2
    python benchmarks/vocab_parallel.py --tokens 512 --vocab 32768 --hidden 256   # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rest_megatron.ops import fused_output_token_stats, vocab_parallel_token_stats  # noqa: E402
from rest_megatron.testing.memory import peak_allocated_bytes  # noqa: E402

_state: dict = {}  # per-rank inputs, kept between pool calls


def _setup(tokens: int, vocab: int, hidden: int) -> str:
    tp, rank = dist.get_world_size(), dist.get_rank()
    gen = torch.Generator().manual_seed(0)  # hidden states and targets: the same on every rank
    h = torch.randn(tokens, hidden, generator=gen)
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    gen_w = torch.Generator().manual_seed(1 + rank)  # each rank its own vocabulary rows
    w = torch.randn(vocab // tp, hidden, generator=gen_w) * (2.0 / hidden**0.5)  # logits std ~2
    _state.update(hidden=h, weight=w, targets=targets, logits=h @ w.t(), group=dist.group.WORLD)
    return f"rank {rank}: logits shard {tuple(_state['logits'].shape)}"


def _naive(logits: torch.Tensor, targets: torch.Tensor, group) -> tuple[torch.Tensor, ...]:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    full = gather_from_tensor_model_parallel_region(logits, group)  # [T, V], Megatron's own gather
    log_p = full.log_softmax(dim=-1)  # [T, V]
    del full
    logprob = log_p.gather(1, targets.unsqueeze(-1)).squeeze(-1)
    p = log_p.exp()  # [T, V]
    entropy = -log_p.mul_(p).sum(dim=-1)  # in place: no third [T, V] tensor
    return logprob, entropy, p.mul_(p).sum(dim=-1)


def _variant(name: str, chunk: int):
    s = _state
    if name == "a":
        return lambda: _naive(s["logits"], s["targets"], s["group"])
    if name == "b":
        return lambda: vocab_parallel_token_stats(s["logits"], s["targets"], s["group"])
    if name == "c":
        return lambda: fused_output_token_stats(s["hidden"], s["weight"], s["targets"], s["group"], chunk)
    if name == "d":
        return lambda: torch.log_softmax(s["logits"], dim=-1)
    if name == "mm":
        return lambda: s["hidden"] @ s["weight"].t()
    if name == "b+bwd":

        def run():
            z = s["logits"].detach().requires_grad_()
            vocab_parallel_token_stats(z, s["targets"], s["group"]).logprob.sum().backward()

        return run
    if name == "c+bwd":

        def run():
            h, w = s["hidden"].detach().requires_grad_(), s["weight"].detach().requires_grad_()
            fused_output_token_stats(h, w, s["targets"], s["group"], chunk).logprob.sum().backward()

        return run
    raise ValueError(name)


def _measure(name: str, chunk: int, repeats: int) -> dict:
    fn = _variant(name, chunk)
    with torch.no_grad() if "bwd" not in name else torch.enable_grad():
        dist.barrier()
        peak, out = peak_allocated_bytes(fn)
        check = None
        if name in ("a", "b", "c"):  # all three must agree
            check = torch.stack([t.detach().float() for t in out])  # [3, T]
        del out
        times, cpu_times = [], []
        for _ in range(repeats):
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    return {
        "peak": peak,
        "time": statistics.median(times),
        "cpu": statistics.median(cpu_times),
        "check": check,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-backward", action="store_true", help="skip the forward+backward rows")
    args = parser.parse_args()
    if args.vocab % args.tp:
        raise SystemExit("--vocab must be divisible by --tp")

    from rest_megatron.testing.gloo import GlooPool

    names = ["a", "b", "c", "d", "mm"] + ([] if args.no_backward else ["b+bwd", "c+bwd"])
    results: dict[str, list[dict]] = {}
    with GlooPool(args.tp, timeout_s=3600, collective_timeout_s=600) as pool:
        for line in pool.run(_setup, args.tokens, args.vocab, args.hidden):
            print(line, flush=True)
        for name in names:
            repeats = 1 if "bwd" in name else args.repeats
            results[name] = pool.run(_measure, name, args.chunk, repeats, timeout_s=3000)
            print(f"  measured {name}", flush=True)

    gib = 1024**3
    logits_gib = args.tokens * args.vocab // args.tp * 4 / gib
    peak = {k: max(r["peak"] for r in v) / gib for k, v in results.items()}  # worst rank
    secs = {k: max(r["time"] for r in v) for k, v in results.items()}  # slowest rank
    cpu = {k: max(r["cpu"] for r in v) for k, v in results.items()}
    labels = {
        "a": "(a) naive gather + log_softmax",
        "b": "(b) ours, logits shard",
        "c": "(c) ours, fused + chunked",
        "d": "(d) floor: log_softmax of shard",
        "mm": "(mm) output matmul h·W_kᵀ",
        "b+bwd": "(b) forward + backward",
        "c+bwd": "(c) forward + backward",
    }
    print(
        f"\nT={args.tokens} V={args.vocab} hidden={args.hidden} TP={args.tp} chunk={args.chunk} float32, "
        f"gloo, 1 thread/rank; torch {torch.__version__}"
    )
    print(
        f"{'variant':34s} {'peak extra GiB/rank':>20s} {'needs logits shard':>19s} "
        f"{'wall s':>8s} {'CPU s':>8s}"
    )
    for k in names:
        needs = f"{logits_gib:.2f} GiB" if k in ("a", "b", "d", "b+bwd") else "-"
        print(f"{labels[k]:34s} {peak[k]:20.3f} {needs:>19s} {secs[k]:8.2f} {cpu[k]:8.2f}")
    diffs = [
        (r["check"] - results["a"][i]["check"]).abs().amax(dim=1).tolist()
        for name in ("b", "c")
        for i, r in enumerate(results[name])
    ]
    print(
        f"\nmax |ours - naive| over ranks (logprob, entropy, collision): "
        f"{[max(d[j] for d in diffs) for j in range(3)]}"
    )
    print(f"\n{'ratio':36s} {'wall':>8s} {'CPU':>8s}")
    print(f"{'peak (a) / peak (c)':36s} {peak['a'] / peak['c']:8.1f} {'':8s}   target >= 20")
    for label, t, target in [
        ("time (b) / time (d)", lambda x: x["b"] / x["d"], "<= 1.2"),
        ("time (c) / (time (b) + time (mm))", lambda x: x["c"] / (x["b"] + x["mm"]), "<= 1.3"),
        ("time (a) / time (b)", lambda x: x["a"] / x["b"], ""),
    ]:
        print(f"{label:36s} {t(secs):8.2f} {t(cpu):8.2f}   {'target ' + target if target else ''}")


if __name__ == "__main__":
    main()
