"""slurm/train.sbatch starts the rollout servers the recipe states: the command line each node's
services step executes equals `server_command` of the recipe (the trainer's own launcher).

SGLang cannot run here, so a stand-in `sglang.launch_server` module (first on PYTHONPATH) records
the arguments and environment it was started with, then exits; the job then fails as it must when
a server dies, which is not what this test looks at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.config import load_config
from rest_megatron.rollout.server_commands import server_command
from tests.integration.slurm.cluster import LocalSlurmCluster, free_ports
from tests.integration.slurm.conftest import PAYLOADS, REPO

FAKE_LAUNCH_SERVER = """import json, os, sys, time
port = sys.argv[sys.argv.index("--port") + 1]
record = {"argv": sys.argv[1:], "raw_logprob_env": os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB")}
folder = os.environ["FAKE_SGLANG_RECORD"]
with open(os.path.join(folder, port + ".tmp"), "w") as f:
    json.dump(record, f)
os.rename(os.path.join(folder, port + ".tmp"), os.path.join(folder, port + ".json"))
deadline = time.monotonic() + 60  # exit (ending the job) once every server has been recorded
while len([n for n in os.listdir(folder) if n.endswith(".json")]) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
sys.exit(3)
"""


@pytest.mark.timeout(300)
def test_servers_get_the_recipe_command_line(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    fake = tmp_path / "fake" / "sglang"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "launch_server.py").write_text(FAKE_LAUNCH_SERVER)
    records = tmp_path / "records"
    records.mkdir()
    overrides = [
        "rollout.engine=sglang",
        "rollout.server_tp=2",
        "rollout.deterministic=true",
        "rollout.sglang={mem_fraction_static: 0.6, context_length: 2048, enable_metrics: true}",
    ]
    port = free_ports(1)
    env = {
        **job_env,
        "TRAIN_CMD": str(PAYLOADS / "counter.py"),
        "SANDBOX": "0",
        "GPUS_PER_NODE": "0",
        "ROLLOUT_PORT": str(port),
        "FAKE_SGLANG_RECORD": str(records),
        "SGLANG_RETURN_ORIGINAL_LOGPROB": "1",  # a user's environment must not reach the servers
        "PYTHONPATH": f"{tmp_path / 'fake'}:{REPO}",
        "SERVICE_TIMEOUT_S": "120",
    }
    job = slurm_cluster.submit(
        REPO / "slurm" / "train.sbatch",
        "recipes/tiny-cpu.yaml",
        *overrides,
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "job-%j.out")),
    )
    record = slurm_cluster.wait_job(job, timeout_s=240)
    log = Path(record["StdOut"]).read_text(errors="replace")
    config = load_config(REPO / "recipes" / "tiny-cpu.yaml", overrides)
    # One server per emulated node (no GPUs: one each), server k on ROLLOUT_PORT + 10 k.
    for k in range(2):
        path = records / f"{port + 10 * k}.json"
        assert path.exists(), log[-4000:]
        seen = json.loads(path.read_text())
        want = server_command(config.rollout, config.model.path, port=port + 10 * k, host="127.0.0.1")
        assert seen["argv"] == want[want.index("sglang.launch_server") + 1 :]
        assert seen["raw_logprob_env"] is None
    assert "--tp-size 2" in log and "--enable-deterministic-inference" in log
