"""The local Slurm cluster, started once per test session by the test run itself.

As root with apt (CI), the fixture installs Debian's Slurm and munge when missing, starts munged,
slurmctld and two slurmd's ("nodes" rmnode1 and rmnode2, 8 fake GPUs each) on 127.0.0.1, and stops
them by PID and removes their state at the end. Elsewhere the Slurm tests skip, saying why.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.slurm.cluster import (
    ClusterUnavailable,
    LocalSlurmCluster,
    ensure_installed,
    free_ports,
)

REPO = Path(__file__).resolve().parents[3]
PAYLOADS = Path(__file__).resolve().parent / "payloads"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurmCluster]:
    """A running two-node cluster for the whole session (about 4 s to start once installed)."""
    try:
        ensure_installed()
    except ClusterUnavailable as err:
        pytest.skip(f"no local Slurm cluster: {err}")
    cluster = LocalSlurmCluster(Path(tempfile.mkdtemp(prefix="rest-megatron-slurm-")))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def job_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a train.sbatch job: fresh ports, runs under tmp_path, CPU ranks, quiet warnings."""
    master_port, sandbox_port = free_ports(1), free_ports(2)
    return {
        "REPO": str(REPO),
        "VENV": sys.prefix,  # the interpreter running the tests, so jobs import the same packages
        "RUNS_ROOT": str(tmp_path / "runs"),
        "NPROC_PER_NODE": "1",
        "MASTER_PORT": str(master_port),
        "SANDBOX_PORT": str(sandbox_port),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
