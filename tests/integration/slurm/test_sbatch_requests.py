"""The sbatch scripts' resource requests against the fake-GPU cluster (`sbatch --test-only`), and
eval.sbatch forwarding its arguments to `rest-megatron eval`.

`--test-only` asks the real scheduler whether and where the job would run, without running it: two
nodes with 8 fake GPUs each accept the scripts' headers; impossible requests are refused (which
shows the check is not vacuous).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.slurm.cluster import LocalSlurmCluster
from tests.integration.slurm.conftest import REPO

SLURM = REPO / "slurm"


def _test_only(
    cluster: LocalSlurmCluster, script: Path, *opts_and_args: str
) -> subprocess.CompletedProcess[str]:
    return cluster.slurm(
        "sbatch", "--test-only", *opts_and_args[:-1], str(script), opts_and_args[-1], cwd=REPO, check=False
    )


@pytest.mark.parametrize(
    ("script", "options", "nodes"),
    [
        ("train.sbatch", (), "rmnode[1-2]"),  # the header: 2 nodes x 8 GPUs
        ("train.sbatch", ("--nodes=2", "--gpus-per-node=4"), "rmnode[1-2]"),  # 2 nodes x 4 GPUs
        ("train.sbatch", ("--nodes=1",), "rmnode1"),  # one colocated node
        ("eval.sbatch", (), "rmnode1"),  # 1 node, 1 GPU
        ("eval.sbatch", ("--gpus-per-node=8",), "rmnode1"),
        ("convert.sbatch", (), "rmnode1"),
    ],
)
def test_requests_are_accepted(
    slurm_cluster: LocalSlurmCluster, script: str, options: tuple[str, ...], nodes: str
) -> None:
    path = SLURM / script
    if not path.exists():
        pytest.skip(f"slurm/{script} not written yet")
    done = _test_only(slurm_cluster, path, *options, "recipes/tiny-cpu.yaml")
    assert done.returncode == 0, done.stderr
    assert "to start at" in done.stderr and f"on nodes {nodes} " in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (("--gpus-per-node=9",), "Requested node configuration is not available"),
        (("--nodes=3",), "Node count specification invalid"),
    ],
)
def test_impossible_requests_are_refused(
    slurm_cluster: LocalSlurmCluster, options: tuple[str, ...], reason: str
) -> None:
    done = _test_only(slurm_cluster, SLURM / "train.sbatch", *options, "recipes/tiny-cpu.yaml")
    assert done.returncode != 0 and reason in done.stderr, done.stderr


def test_gpu_recipes_fit_their_request(slurm_cluster: LocalSlurmCluster) -> None:
    """Every GPU recipe's whole job as train.sbatch is asked for it: launch.nnodes nodes, each with the
    trainer's launch.nproc_per_node GPUs plus its share of the rollout servers (num_servers x server_tp,
    colocated on the trainer nodes)."""
    from rest_megatron.config import config_from_dict, read_recipe

    checked = []
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        config = config_from_dict(read_recipe(recipe))  # the shape only: the weights are not downloaded here
        launch, rollout = config.launch, config.rollout
        if launch.device != "cuda":
            continue
        rollout_gpus = 0 if rollout.server_urls else rollout.num_servers * rollout.server_tp
        gpus_per_node = launch.nproc_per_node + -(-rollout_gpus // launch.nnodes)
        assert launch.nnodes <= len(slurm_cluster.nodes) and gpus_per_node <= slurm_cluster.gpus_per_node, (
            f"{recipe.name} asks for {launch.nnodes} x {gpus_per_node} GPUs; the test cluster has "
            f"{len(slurm_cluster.nodes)} x {slurm_cluster.gpus_per_node}"
        )
        options = (f"--nodes={launch.nnodes}", f"--gpus-per-node={gpus_per_node}")
        done = _test_only(slurm_cluster, SLURM / "train.sbatch", *options, str(recipe))
        assert done.returncode == 0, f"{recipe.name}: {done.stderr}"
        assert "to start at" in done.stderr, done.stderr
        checked.append(recipe.name)
    assert len(checked) >= 8, checked  # four models, ResT and GRPO each


@pytest.mark.timeout(120)
def test_eval_forwards_arguments_and_exit_status(slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:
    """The job runs `rest-megatron eval bfcl ARGS` on its node: same exit status and output as here."""
    args = ("--help",)
    local = subprocess.run(
        [sys.executable, "-m", "rest_megatron.cli", "eval", "bfcl", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    expected = (local.stdout + local.stderr).strip().splitlines()[0]
    env = {"REPO": str(REPO), "VENV": sys.prefix, "PYTHONWARNINGS": "ignore"}
    job = slurm_cluster.submit(
        SLURM / "eval.sbatch",
        *args,
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "eval-%j.out")),
    )
    record = slurm_cluster.wait_job(job, timeout_s=100)
    log = Path(record["StdOut"]).read_text()
    assert record["ExitCode"] == f"{local.returncode}:0", log
    assert expected in log and "phase: eval bfcl on rmnode1" in log
    assert f"phase: done (status {local.returncode})" in log
