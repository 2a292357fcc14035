"""The tiny CPU recipe through train.sbatch on two emulated nodes: the real trainer, one rank per
node, an embedded rollout server and a sandbox on each node; it must leave a checkpoint and a
Hugging Face export in the run directory that the job derived from its id.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.integration.slurm.cluster import LocalSlurmCluster
from tests.integration.slurm.conftest import REPO

needs_trainer = pytest.mark.skipif(
    importlib.util.find_spec("rest_megatron.trainer.loop") is None, reason="needs rest_megatron.trainer.loop"
)


@needs_trainer
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tiny_recipe_on_two_nodes(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**job_env, "SERVICE_TIMEOUT_S": "300"}  # ROLLOUT_ENGINE and the model come from the recipe
    overrides = (
        "optimizer.num_steps=2",
        "checkpoint.save_interval=1",
        "logging.eval_interval=0",
        "sft.num_steps=10",
    )
    job = slurm_cluster.submit(
        REPO / "slurm" / "train.sbatch",
        "recipes/tiny-cpu.yaml",
        *overrides,
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "job-%j.out")),
    )
    record = slurm_cluster.wait_job(job, timeout_s=380)
    log = Path(record["StdOut"]).read_text(errors="replace")
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", log[-6000:]

    # Colocated embedded servers, one per node, both handed to the trainer.
    assert 'rollout.server_urls=["http://rmnode1:30000","http://rmnode2:30010"]' in log
    run_dir = Path(env["RUNS_ROOT"]) / f"rest-megatron-train-{job}"
    resolved = (run_dir / "resolved_config.yaml").read_text()
    assert "rmnode2:30010" in resolved and f"run_dir: {run_dir}" in resolved and "nnodes: 2" in resolved
    # Two RL steps on a world of two ranks, a checkpoint of the last one, an HF export.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 2
    assert (run_dir / "checkpoints" / "step_00000002").is_dir()
    hf = run_dir / "hf"
    assert (hf / "config.json").exists() and list(hf.glob("*.safetensors"))
