"""`scripts/gpu_smoke.sh` on a machine without a GPU: it says so at once and exits 2, no traceback.
(On a GPU it runs the whole check, minutes long, so it is not part of this suite.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rest_megatron.config import load_config
from rest_megatron.testing.gpu_smoke import NO_GPU_EXIT_CODE, RECIPE, gpu_overrides

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: the smoke check would really run"
)
def test_without_a_gpu_it_exits_at_once_saying_no_gpu() -> None:
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_smoke.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == NO_GPU_EXIT_CODE, result.stderr
    assert "no GPU" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert "PASS" not in result.stdout and time.monotonic() - started < 60


def test_its_recipe_is_the_gpu_path_and_loads(tmp_path: Path) -> None:
    """The generated overrides are valid recipe keys and ask for what the check claims to prove."""
    overrides = gpu_overrides(tmp_path / "run", sft_steps=5, rl_steps=2, mem_fraction=0.3)
    config = load_config(
        RECIPE,
        [
            o
            for o in overrides
            if not o.startswith(("launch.device", "launch.backend", "model.transformer_impl"))
        ],
    )
    assert config.model.dtype == "bfloat16" and config.rollout.engine == "sglang"
    assert config.parallel.pack_sequences and config.sft.num_steps == 5 and config.optimizer.num_steps == 2
    assert config.rollout.sglang == {"mem_fraction_static": 0.3}
    assert {"launch.device=cuda", "launch.backend=nccl", "model.transformer_impl=transformer_engine"} <= set(
        overrides
    )
