"""Resume after a hard kill: `rest-megatron train --resume RUN_DIR` redoes exactly the unfinished steps.

A short tiny-recipe run (checkpoint every step, rollouts saved) is killed with SIGKILL, together with
every process it started, as soon as its step-2 checkpoint is complete: in the middle of step 3, before
step 3 logs anything (a step takes at least its rollouts and weight sync, far longer than the poll).
The resumed run must finish every step exactly once, in the data order of an uninterrupted run of the
same recipe, train the steps after the checkpoint as that run did (two PPO updates each: same rewards,
losses, gradient norms and second-update ratio spread), and end with the final checkpoint and Hugging
Face export. The SFT warm start is the recipe's, so that rollouts differ in reward and steps train.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM_STEPS = 4
KILL_IN_STEP = 3
# Small and fast: two SFT steps (the model still babbles), short single-turn rollouts, no evaluation.
# Two PPO updates per step (mini-batches of 4 of the 8 trajectories): the resumed run must split and
# train the steps after the checkpoint as the uninterrupted run did.
OVERRIDES = [
    "sft.num_steps=150",
    f"optimizer.num_steps={NUM_STEPS}",
    "checkpoint.save_interval=1",
    "checkpoint.num_keep_last=2",
    "data.num_prompts_per_step=4",
    "rollout.num_samples_per_prompt=2",
    "rollout.max_new_tokens=96",
    "rollout.max_turns=2",
    "data.eval_path=null",
    "logging.eval_interval=0",
    "logging.save_rollouts=true",
    "optimizer.mini_batch_size=4",
    "parallel.micro_batch_size=2",
    "algorithm.dynamic_sampling=false",
]
COMPARED = ("reward/mean", "num_updates", "loss", "grad_norm", "ppo/u2/ratio_std", "ppo/u2/ratio_max")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(*args: str) -> list[str]:
    return [sys.executable, "-m", "rest_megatron.cli", "train", *args]


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _prompts(run_dir: Path, step: int) -> list[str]:
    """The user question of every trajectory of a step, in order: the data order."""
    lines = (run_dir / "rollouts" / f"step_{step:08d}.jsonl").read_text().splitlines()
    return [next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user") for line in lines]


def _kill_mid_step(run_dir: Path, timeout_s: float = 600) -> None:
    """Start a run and SIGKILL its whole process group as soon as step KILL_IN_STEP has begun."""
    proc = subprocess.Popen(
        _train(str(ROOT / "recipes/tiny-cpu.yaml"), f"logging.run_dir={run_dir}", *OVERRIDES),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    latest = run_dir / "checkpoints" / "latest"
    previous = f"step_{KILL_IN_STEP - 1:08d}"
    deadline = time.monotonic() + timeout_s
    try:
        while not (latest.exists() and latest.read_text().strip() == previous):
            assert proc.poll() is None, (
                f"the run ended before step {KILL_IN_STEP}:\n{proc.stdout.read()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"no {previous} checkpoint in time"
            time.sleep(0.01)
    finally:
        services = psutil.Process(proc.pid).children(recursive=True)  # servers in sessions of their own
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    # The inference server and the sandbox die with the trainer (parent-death signal), not outlive it.
    _, alive = psutil.wait_procs(services, timeout=30)
    assert not alive, f"left running after the trainer was killed: {[p.cmdline()[:4] for p in alive]}"


@pytest.mark.slow
def test_sigkill_mid_step_then_resume_does_every_step_once_in_order(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        _train(str(ROOT / "recipes/tiny-cpu.yaml"), f"logging.run_dir={straight}", *OVERRIDES),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    _kill_mid_step(killed)
    assert _steps(killed) == list(range(1, KILL_IN_STEP))  # step 3 never finished
    assert (killed / "checkpoints" / "latest").read_text().strip() == f"step_{KILL_IN_STEP - 1:08d}"

    resumed = subprocess.run(
        _train("--resume", str(killed)), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _steps(killed) == list(range(1, NUM_STEPS + 1)), "every step exactly once"
    for step in range(1, NUM_STEPS + 1):
        assert _prompts(killed, step) == _prompts(straight, step), f"data order differs at step {step}"
    resumed_records, straight_records = _records(killed), _records(straight)
    trained = [s for s in range(KILL_IN_STEP, NUM_STEPS + 1) if "num_updates" in straight_records[s]]
    assert trained, "no step after the resume trained (all groups uniform): nothing compared"
    for step in trained:  # same weights, same split into mini-batches, same updates
        for key in COMPARED:
            assert resumed_records[step][key] == pytest.approx(
                straight_records[step][key], rel=1e-4, abs=1e-6
            ), (step, key)
    assert (killed / "checkpoints" / "latest").read_text().strip() == f"step_{NUM_STEPS:08d}"
    assert (killed / "hf" / "config.json").is_file()


def test_resume_names_a_missing_run_dir(tmp_path: Path) -> None:
    from rest_megatron.cli import main

    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
