"""The GPU smoke check behind `scripts/gpu_smoke.sh`: the whole GPU path on one GPU in a few minutes.

It drives the real `rest-megatron train` (no second trainer) on the tiny Qwen3-shaped model with the
GPU settings of the real recipes, then checks what the run left behind:

    environment  CUDA GPU, NCCL, Transformer Engine and SGLang import
    train        bf16 on the Transformer Engine spec, NCCL, an SGLang server the trainer starts,
                 SFT warm start, two RL steps on packed sequences, weight sync, checkpoint, HF export
    drift        logprob_drift (server vs trainer log-probs) < 1e-2 on every trained step
    weights      the exported weights differ from the Hugging Face weights the run started from
    checkpoint   the final checkpoint is complete (its manifest verifies)
    resume       `rest-megatron train --resume` continues from it for one more step
    export       the exported Hugging Face folder loads in transformers on the GPU, finite logits

Each stage prints PASS/FAIL with its figures (tokens/s, peak GPU memory of the device); the first
failed stage ends the check with exit code 1 and its name. Without a GPU it exits at once with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

NO_GPU_EXIT_CODE = 2
MAX_DRIFT = 1e-2  # bf16 trainer vs bf16 server: ~1e-3 expected; float32 on CPU is ~3e-7
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"


class StageFailed(RuntimeError):
    """A stage's check did not hold; the message says what was measured."""


def gpu_overrides(run_dir: Path, *, sft_steps: int, rl_steps: int, mem_fraction: float) -> list[str]:
    """`key=value` overrides that turn the tiny CPU recipe into the GPU path of the real recipes."""
    return [
        "model.dtype=bfloat16",
        "model.transformer_impl=transformer_engine",
        "launch.device=cuda",
        "launch.backend=nccl",
        "launch.nproc_per_node=1",
        "rollout.engine=sglang",
        f"rollout.sglang.mem_fraction_static={mem_fraction}",
        "parallel.pack_sequences=true",
        f"sft.num_steps={sft_steps}",
        f"optimizer.num_steps={rl_steps}",
        "checkpoint.save_interval=1",
        "logging.eval_interval=0",
        f"logging.run_dir={run_dir}",
    ]


class PeakMemory:
    """Polls the device's used memory (trainer and server together) with nvidia-smi while a stage runs."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                self.peak_mib = max(self.peak_mib, int(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _train(args: list[str], log: Path, timeout_s: float) -> float:
    started = time.perf_counter()
    with open(log, "a") as handle:
        code = subprocess.call(
            [sys.executable, "-m", "rest_megatron.cli", "train", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise StageFailed(f"rest-megatron train exited with {code}; the end of {log}:\n{tail}")
    return time.perf_counter() - started


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise StageFailed(f"{path} is missing")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _max_weight_change(source: Path, exported: Path) -> float:
    from safetensors import safe_open

    change = 0.0
    with (
        safe_open(str(source / "model.safetensors"), "pt") as a,
        safe_open(str(exported / "model.safetensors"), "pt") as b,
    ):
        for name in a.keys():
            change = max(change, float((a.get_tensor(name).float() - b.get_tensor(name).float()).abs().max()))
    return change


def run_stages(work: Path, *, sft_steps: int, rl_steps: int, mem_fraction: float, timeout_s: float) -> None:
    """Run the stages in order; raise StageFailed (via `stage`) at the first that fails."""
    run_dir, log = work / "run", work / "train.log"
    overrides = gpu_overrides(run_dir, sft_steps=sft_steps, rl_steps=rl_steps, mem_fraction=mem_fraction)
    state: dict = {}

    def environment() -> str:
        import torch
        import torch.distributed as dist

        from rest_megatron.model.builder import require_transformer_engine

        if not dist.is_nccl_available():
            raise StageFailed("this torch build has no NCCL")
        require_transformer_engine()
        import sglang  # noqa: F401 - the server the trainer starts

        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, sglang {sglang.__version__}"

    def train() -> str:
        with PeakMemory() as memory:
            seconds = _train([str(RECIPE), *overrides], log, timeout_s)
        steps = [m for m in _metrics(run_dir) if "tokens_per_s" in m]
        if len(steps) < rl_steps:
            raise StageFailed(
                f"{len(steps)} of {rl_steps} RL steps trained (the others were skipped: uniform rewards)"
            )
        state["steps"] = steps
        rate = sum(m["tokens_per_s"] for m in steps) / len(steps)
        return (
            f"{seconds:.0f} s, {rate:.0f} tokens/s (update), peak GPU memory {memory.peak_mib} MiB (device)"
        )

    def drift() -> str:
        values = [m["logprob_drift"] for m in state["steps"]]
        if max(values) >= MAX_DRIFT:
            raise StageFailed(f"logprob_drift {values} (limit {MAX_DRIFT})")
        return "logprob_drift " + ", ".join(f"{v:.2e}" for v in values)

    def weights() -> str:
        from rest_megatron.trainer.runtime import resolve_model_dir

        change = _max_weight_change(resolve_model_dir("tiny-qwen3"), run_dir / "hf")
        if not change > 0.0:
            raise StageFailed(
                "the exported weights equal the HF weights the run started from: nothing was trained"
            )
        return f"max |exported - loaded| = {change:.3e}"

    def checkpoint() -> str:
        from rest_megatron.trainer.checkpoint import list_checkpoints, verify_checkpoint

        found = list_checkpoints(run_dir / "checkpoints")
        if not found:
            raise StageFailed(f"no checkpoint under {run_dir / 'checkpoints'}")
        verify_checkpoint(found[-1])
        return f"{found[-1].name} verified"

    def resume() -> str:
        with PeakMemory() as memory:
            seconds = _train(
                ["--resume", str(run_dir), f"optimizer.num_steps={rl_steps + 1}"], log, timeout_s
            )
        last = max(m.get("step", 0) for m in _metrics(run_dir))
        if last != rl_steps + 1:
            raise StageFailed(f"the resumed run ended at step {last}, expected {rl_steps + 1}")
        return f"step {rl_steps} -> {last} in {seconds:.0f} s, peak GPU memory {memory.peak_mib} MiB (device)"

    def export() -> str:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", dtype=torch.bfloat16).cuda()
        logits = model(torch.arange(16, device="cuda")[None]).logits
        if not bool(torch.isfinite(logits).all()):
            raise StageFailed("the exported model gives non-finite logits")
        return f"{run_dir / 'hf'} loads, logits {tuple(logits.shape)} finite"

    for name, check in [
        ("environment", environment),
        ("train", train),
        ("drift", drift),
        ("weights", weights),
        ("checkpoint", checkpoint),
        ("resume", resume),
        ("export", export),
    ]:
        stage(name, check)


def stage(name: str, check: Callable[[], str]) -> None:
    """Run one stage and print its verdict; a failure becomes StageFailed naming the stage."""
    started = time.perf_counter()
    try:
        figures = check()
    except Exception as error:  # noqa: BLE001 - every failure is reported as this stage's
        print(
            f"FAIL {name} ({time.perf_counter() - started:.0f} s): {type(error).__name__}: {error}",
            flush=True,
        )
        raise StageFailed(name) from error
    print(f"PASS {name} ({time.perf_counter() - started:.0f} s): {figures}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_smoke.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="where the run goes (default: a new temporary folder, kept)")
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--rl-steps", type=int, default=2)
    parser.add_argument("--mem-fraction", type=float, default=0.3, help="SGLang's share of the one GPU")
    parser.add_argument(
        "--timeout-s", type=float, default=300.0, help="limit of each `rest-megatron train` run"
    )
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_smoke: no GPU: torch sees no CUDA device, so the GPU path cannot be checked here "
            "(run it on a machine with one GPU and the gpu extra: EXTRAS=dev,gpu)",
            file=sys.stderr,
        )
        return NO_GPU_EXIT_CODE
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_smoke: working in {work}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    try:
        run_stages(
            work,
            sft_steps=args.sft_steps,
            rl_steps=args.rl_steps,
            mem_fraction=args.mem_fraction,
            timeout_s=args.timeout_s,
        )
    except StageFailed as failed:
        print(f"gpu_smoke: FAILED at stage {failed} after {time.perf_counter() - started:.0f} s", flush=True)
        return 1
    print(f"gpu_smoke: all stages passed in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
