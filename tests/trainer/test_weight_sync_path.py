"""The trainer's distributed weight sync, end to end on CPU: `rest-megatron train` with the embedded
engine and `rollout.weight_sync=distributed`, the same path SGLang runs over NCCL (the trainer's rank 0
and the server in one gloo group, several buckets, version tags), and no sync at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rest_megatron.rollout.tiny_caller import tiny_tool_caller_dir

ROOT = Path(__file__).resolve().parents[2]


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "rest_megatron.cli", "train", str(ROOT / "recipes/tiny-cpu.yaml"),
         f"logging.run_dir={run_dir}", f"model.path={tiny_tool_caller_dir()}", "sft.num_steps=0",
         "optimizer.num_steps=2", "data.num_prompts_per_step=4", "rollout.max_new_tokens=64",
         "algorithm.dynamic_sampling=false", "logging.eval_interval=0", "data.eval_path=null",
         "logging.save_rollouts=true", "checkpoint.save_interval=0", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
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
