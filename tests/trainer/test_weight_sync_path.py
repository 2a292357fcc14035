"""The trainer's distributed weight sync, end to end on CPU: `rest-megatron train` with the embedded
engine and `rollout.weight_sync=distributed`, the same path SGLang runs over NCCL (the trainer's rank 0
and the server in one gloo group, several buckets, version tags), and no sync at start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rest_megatron.testing.tiny_caller import tiny_tool_caller_dir

ROOT = Path(__file__).resolve().parents[2]


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rest_megatron.cli",
            "train",
            str(ROOT / "recipes/tiny-cpu.yaml"),
            f"logging.run_dir={run_dir}",
            f"model.path={tiny_tool_caller_dir()}",
            "sft.num_steps=0",
            "optimizer.num_steps=2",
            "data.num_prompts_per_step=4",
            "rollout.max_new_tokens=64",
            "algorithm.dynamic_sampling=false",
            "logging.eval_interval=0",
            "data.eval_path=null",
            "logging.save_rollouts=true",
            "checkpoint.save_interval=0",
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_distributed_sync_reaches_the_server_through_the_trainer(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # 0.05 MB buckets: the tiny caller's ~30 tensors go in several broadcasts.
    result = train(run_dir, "rollout.weight_sync=distributed", "rollout.weight_sync_bucket_mb=0.05")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2] and "skipped" not in steps[0], steps
    assert steps[0]["rollout/failed_frac"] == 0.0 and steps[0]["rollout/untrained_frac"] == 0.0
    assert all(r["logprob_drift"] < 1e-3 for r in steps if "logprob_drift" in r)

    def versions(step: int) -> set[str]:
        lines = (run_dir / "rollouts" / f"step_{step:08d}.jsonl").read_text().splitlines()
        return {v for line in lines for v in json.loads(line)["metadata"]["weight_versions"]}

    # Step 1 samples from the weights the server started with (no sync at start: version 0); step 2
    # from the broadcast after step 1's update, tagged with its version.
    assert versions(1) == {"0"} and versions(2) == {"1"}
    assert not (run_dir / "weights").exists()  # nothing went through the disk


def _pid_with_arg(arg: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if arg in (proc / "cmdline").read_bytes().decode(errors="replace").split("\0"):
                    return int(proc.name)
            except OSError:
                continue
    return None


@pytest.mark.slow
@pytest.mark.parametrize("weight_sync", ["disk", "distributed"])
def test_a_server_killed_mid_step_leaves_the_run_to_the_other(tmp_path: Path, weight_sync: str) -> None:
    """Two embedded servers; one is SIGKILLed while step 1 samples. The step completes on the other
    (no trajectory failed), the sync updates the one that is left (the distributed sync forms its
    group again without the dead one), and step 2 runs there."""
    run_dir = tmp_path / "run"
    port_file = run_dir / "logs" / "embedded-1.port"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rest_megatron.cli",
            "train",
            str(ROOT / "recipes/tiny-cpu.yaml"),
            f"logging.run_dir={run_dir}",
            f"model.path={tiny_tool_caller_dir()}",
            "sft.num_steps=0",
            "optimizer.num_steps=2",
            "data.num_prompts_per_step=4",
            "rollout.max_new_tokens=64",
            "algorithm.dynamic_sampling=false",
            "logging.eval_interval=0",
            "data.eval_path=null",
            "logging.save_rollouts=true",
            "checkpoint.save_interval=0",
            "rollout.num_servers=2",
            f"rollout.weight_sync={weight_sync}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "logs" / "embedded-0.log").exists() or not port_file.exists():
            assert trainer.poll() is None and time.monotonic() < deadline, "the servers never started"
            time.sleep(0.2)
        victim = _pid_with_arg(str(port_file))
        assert victim is not None
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        while _decode_steps(url) == 0:  # step 1's rollouts are under way on it
            assert trainer.poll() is None and time.monotonic() < deadline, "no rollout reached the server"
            time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        metrics = run_dir / "metrics.jsonl"
        killed_mid_step_1 = not metrics.exists() or "reward/mean" not in metrics.read_text()
        output, _ = trainer.communicate(timeout=900)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert trainer.returncode == 0, output[-3000:]
    steps = [
        r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "reward/mean" in r
    ]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["rollout/failed_frac"] == 0.0 for r in steps), steps

    def servers(step: int) -> set[str]:
        lines = (run_dir / "rollouts" / f"step_{step:08d}.jsonl").read_text().splitlines()
        return {s for line in lines for s in json.loads(line)["metadata"]["servers"]}

    assert killed_mid_step_1
    assert url not in servers(2) and len(servers(2)) == 1


def _decode_steps(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/get_server_info", timeout=5, trust_env=False).json()["num_decode_steps"])
    except httpx.HTTPError:
        return 0
