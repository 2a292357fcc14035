"""The README's demo end to end: `rest-megatron train recipes/tiny-cpu.yaml` as a user runs it.

SFT warm start, ResT RL with real rollouts (embedded engine) and real tool execution (sandbox),
checkpoints and the final Hugging Face export, one CLI process per seed on CPU, two at once.

What it proves: the pipeline learns, i.e. RL raises the held-out greedy reward above where SFT left
it. One run cannot show that on every machine: 12 steps of 32 sampled trajectories are chaotic, and
float rounding, which differs between CPUs and thread counts, changes the samples and the outcome
(seed 0 gained +1.06 on one machine and +0.34 on another). So it asserts on the MEAN gain of SEEDS:
+0.45 on the development machine, against a margin of 0.1; the measured spread and the odds of a
false failure are in benchmarks/README.md ("The end-to-end test's margin"). The seeds are ones whose
SFT leaves RL room: seed 2's SFT lands on the ~1.0 plateau (well-formed calls, wrong numbers) on
every machine measured, and 12 steps never move it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 3)
GAIN_MARGIN = 0.1
"""The mean held-out gain over SEEDS must exceed this; measured means are in benchmarks/README.md."""
TIMEOUT_S = 2400
"""Two runs at once; on the 2-core development machine under a load average of 20-60, SFT alone took
~400 s and each RL step ~100 s, past the suite's default 900 s timeout."""


def _train(seed: int, run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with open(run_dir.with_suffix(".log"), "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rest_megatron.cli",
                "train",
                str(ROOT / "recipes/tiny-cpu.yaml"),
                f"data.seed={seed}",
                f"logging.run_dir={run_dir}",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
def test_tiny_recipe_trains_checkpoints_and_exports(tmp_path: Path) -> None:
    run_dirs = {seed: tmp_path / f"seed{seed}" for seed in SEEDS}
    processes = {seed: _train(seed, run_dir) for seed, run_dir in run_dirs.items()}
    try:
        for seed, process in processes.items():
            returncode = process.wait(timeout=TIMEOUT_S)
            assert returncode == 0, f"seed {seed}:\n" + run_dirs[seed].with_suffix(".log").read_text()[-4000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    gains = {}
    for seed, run_dir in run_dirs.items():
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [(r["step"], r["eval/reward"]) for r in records if "eval/reward" in r]
        assert evals[0][0] == 0 and evals[-1][0] == records[-1]["step"], evals
        assert [r["step"] for r in records if "reward/mean" in r] == list(range(1, records[-1]["step"] + 1))
        assert all(
            r["logprob_drift"] < 1e-3 for r in records if "logprob_drift" in r
        )  # train/inference agree
        gains[seed] = evals[-1][1] - evals[0][1]
    # RL improved on the SFT warm start, on average over the seeds. A policy that does not change
    # gains exactly 0: greedy decoding on the batch-invariant engine is deterministic.
    assert statistics.fmean(gains.values()) > GAIN_MARGIN, gains

    run_dir = run_dirs[SEEDS[0]]
    assert (run_dir / "resolved_config.yaml").is_file() and (run_dir / "learning_curves.png").is_file()
    assert (run_dir / "checkpoints" / "latest").read_text().startswith("step_")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    assert model.config.vocab_size >= len(tokenizer)
