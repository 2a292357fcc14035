"""The README's demo end to end: `rest-megatron train recipes/tiny-cpu.yaml` as a user runs it.

SFT warm start, ResT RL with real rollouts (embedded engine) and real tool execution (sandbox),
checkpoints and the final Hugging Face export, in one CLI process on CPU (about 3 minutes).

Measured with this recipe (seed 0): held-out greedy reward 0.874 after SFT; after 6 RL steps 0.883 in
one run and 0.694 in another (the sampled rollouts differ run to run). Six steps do not move it reliably
either way, so this test checks the pipeline and the SFT warm start, not an RL gain: a clear, repeatable
gain is the open part of the trainer issue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_recipe_trains_checkpoints_and_exports(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "rest_megatron.cli", "train", str(ROOT / "recipes/tiny-cpu.yaml"),
         f"logging.run_dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/reward"]) for r in records if "eval/reward" in r]
    assert evals[0][0] == 0 and evals[-1][0] == records[-1]["step"], evals
    assert evals[0][1] > 0.5, evals  # the SFT warm start emits well-formed calls (random init scores -2)
    assert [r["step"] for r in records if "reward/mean" in r] == list(range(1, records[-1]["step"] + 1))
    assert all(r["logprob_drift"] < 1e-3 for r in records if "logprob_drift" in r)  # train/inference agree

    assert (run_dir / "resolved_config.yaml").is_file() and (run_dir / "learning_curves.png").is_file()
    assert (run_dir / "checkpoints" / "latest").read_text().startswith("step_")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    assert model.config.vocab_size >= len(tokenizer)
