"""A real vLLM (the CPU build, in `.venv-vllm` from `bash scripts/setup_vllm.sh`) as the training engine.

Each test starts its own server: 90-500 s on two shared cores (model warm-up). Skipped, with the
reason, when the venv is absent. Run: pytest -m vllm tests/integration/test_vllm.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from rest_megatron.assets import tiny_model_dir
from rest_megatron.config import load_config
from rest_megatron.rollout.clients import VLLMClient
from rest_megatron.rollout.launch import free_port, start_vllm_servers
from rest_megatron.rollout.types import SamplingParams
from rest_megatron.rollout.weight_sync import DistributedWeightSync
from rest_megatron.testing.tiny_caller import tiny_tool_caller_dir

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
EAGER = "rollout.vllm={enforce_eager: true}"  # skips torch.compile's warm-up, minutes on two cores

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # a server start alone can take 8 min under load
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(),
        reason=f"no {VLLM_PYTHON}: run `bash scripts/setup_vllm.sh` to create the vLLM venv these tests need",
    ),
]


def _greedy_reference(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            min_new_tokens=n,
        )[0, len(prompt) :].tolist()


def test_weight_updates_show_in_the_next_outputs(tmp_path: Path) -> None:
    """Disk (vLLM's reload_weights) and broadcast (our worker extension, gloo) both change what it samples."""
    base, caller = tiny_model_dir("tiny-qwen3"), tiny_tool_caller_dir()
    prompt, n = list(range(5, 25)), 12
    refs = {"base": _greedy_reference(base, prompt, n), "caller": _greedy_reference(caller, prompt, n)}
    assert refs["base"] != refs["caller"]
    config = load_config(ROOT / "recipes/tiny-cpu.yaml", ["rollout.engine=vllm", EAGER])
    server = start_vllm_servers(base, config, log_dir=tmp_path)[0]
    greedy = SamplingParams(temperature=0, max_new_tokens=n, ignore_eos=True)

    async def scenario() -> dict[str, list[int]]:
        client = VLLMClient(server.base_url, timeout_s=300)
        seen = {"start": (await client.generate(prompt, greedy)).output_ids}
        await client.update_weights_from_disk(str(caller))
        seen["after_disk"] = (await client.generate(prompt, greedy)).output_ids
        sync = DistributedWeightSync(
            [client],
            [1],
            master_address="127.0.0.1",
            master_port=free_port(),
            backend="gloo",
            device="cpu",
            bucket_bytes=1 << 20,
        )
        await sync.init_group()
        base_model = transformers.AutoModelForCausalLM.from_pretrained(base)
        buckets = await sync.push(iter(base_model.state_dict().items()), weight_version="2")
        seen["after_broadcast"] = (await client.generate(prompt, greedy)).output_ids
        seen["buckets"] = [buckets]
        await client.aclose()
        return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        server.stop()
    assert seen["start"] == refs["base"]
    assert seen["after_disk"] == refs["caller"]
    assert seen["after_broadcast"] == refs["base"] and seen["buckets"][0] > 1


@pytest.mark.parametrize(("temperature", "weight_sync"), [(0.8, "distributed"), (1.0, "disk")])
def test_two_rl_steps_with_vllm(tmp_path: Path, temperature: float, weight_sync: str) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
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
            "checkpoint.save_interval=0",
            "rollout.engine=vllm",
            EAGER,
            f"rollout.temperature={temperature}",
            f"rollout.weight_sync={weight_sync}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [
        r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "reward/mean" in r
    ]
    assert [r["step"] for r in steps] == [1, 2] and all("skipped" not in r for r in steps), steps
    drifts = [r["logprob_drift"] for r in steps]
    print(f"vLLM logprob_drift at temperature {temperature} ({weight_sync} sync): {drifts}")
    assert all(d < 1e-4 for d in drifts), drifts  # step 2 samples from the synced weights
