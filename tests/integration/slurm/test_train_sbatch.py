"""slurm/train.sbatch on a real two-node Slurm cluster: multi-node payloads, preemption, failures.

Each job runs real torchrun processes on both emulated nodes, rendezvousing over c10d on the first
one, exactly as on a cluster; the payload is `rest-megatron train` itself, or small scripts in
payloads/ that make resume and failure observable.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.slurm.cluster import LocalSlurmCluster
from tests.integration.slurm.conftest import PAYLOADS, REPO

TRAIN = REPO / "slurm" / "train.sbatch"


def _log(record: dict[str, str]) -> str:
    return Path(record["StdOut"]).read_text(errors="replace")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(600)
def test_two_node_tensor_parallel_train(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    """`rest-megatron train` at TP=2 across the two nodes (one rank each, gloo): one model split over
    the nodes, SFT then one RL step, with an embedded rollout server and a sandbox per node."""
    env = {**job_env, "SERVICE_TIMEOUT_S": "300"}
    # launch.nnodes: the job validates the recipe before it inserts its own launch.* overrides.
    overrides = (
        "parallel.tp=2",
        "launch.nnodes=2",
        "sft.num_steps=2",
        "sft.num_samples=8",
        "optimizer.num_steps=1",
        "data.num_prompts_per_step=2",
        "rollout.num_samples_per_prompt=2",
        "rollout.max_new_tokens=32",
        "rollout.max_turns=2",
        "algorithm.dynamic_sampling=false",
        "logging.eval_interval=0",
    )
    job = slurm_cluster.submit(
        TRAIN,
        "recipes/tiny-cpu.yaml",
        *overrides,
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "job-%j.out")),
    )
    record = slurm_cluster.wait_job(job, timeout_s=540)
    log = _log(record)
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", log[-4000:]
    # Both nodes ran a torchrun against the first node's rendezvous, after their sandbox was healthy.
    port, sandbox = job_env["MASTER_PORT"], int(job_env["SANDBOX_PORT"])
    for node, index in (("rmnode1", 0), ("rmnode2", 1)):
        assert f"[trainer {node}" in log and f"node {index}/2, 1 proc(s), rendezvous rmnode1:{port}" in log
        assert f"healthy: http://127.0.0.1:{sandbox + index}/health" in log
    # A world of two ranks at TP=2 is one model split across the two nodes; it trained end to end.
    run_dir = Path(env["RUNS_ROOT"]) / f"rest-megatron-train-{job}"
    resolved = (run_dir / "resolved_config.yaml").read_text()
    assert re.search(r"^  tp: 2$", resolved, re.M) and re.search(r"^  nnodes: 2$", resolved, re.M), resolved
    assert "sft step 2/2 loss" in log, log[-4000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 1, metrics
    # What the job started is gone with it.
    assert not _listening(sandbox) and not _listening(sandbox + 1)


def _events(run_dir: Path) -> list[dict]:
    """The payload's events so far; a line still being appended (no newline yet) is not one."""
    path = run_dir / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("\n")]


def _diagnosis(cluster: LocalSlurmCluster, job: int) -> str:
    """Everything a timed-out wait needs to be understood: the job's record and log, its live stepds,
    the daemons' logs."""
    record = cluster.job(job)
    return f"{record}\nstepds: {cluster.stepds(job)}\n== job log\n{_log(record)[-3000:]}\n{cluster.logs()}"


def _wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, cluster: LocalSlurmCluster, job: int
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}\n{_diagnosis(cluster, job)}")
        time.sleep(0.2)


def _release_requeued(cluster: LocalSlurmCluster, job: int, restarts: int, timeout_s: float = 90) -> None:
    """Wait for restart number `restarts` to run, skipping the hold Slurm puts on a requeued job.

    Slurm keeps a requeued batch job pending for ~2 minutes (Reason=BeginTime); an admin's
    `scontrol update StartTime=now` releases it, which is all this does while the job is pending.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = cluster.job(job)
        if int(record["Restarts"]) >= restarts and record["JobState"] in ("RUNNING", "COMPLETED"):
            return
        # Only once the requeue is complete (the hold is in place, every node idle again, no stepd of
        # the previous attempt left): releasing a job whose old batch step is still exiting makes
        # its relaunch fail at once.
        if (
            record["JobState"] == "PENDING"
            and record["Reason"] == "BeginTime"
            and set(cluster.node_states().values()) == {"idle"}
            and not cluster.stepds(job)
        ):
            cluster.slurm("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
        time.sleep(0.5)
    raise TimeoutError(f"job {job} did not run restart {restarts}\n{_diagnosis(cluster, job)}")


@pytest.mark.timeout(600)
def test_preempted_job_resumes(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM -> checkpoint -> requeue -> resume, twice: the time-limit warning, then a preemption.

    1. `scancel -b -s TERM` is what `#SBATCH --signal=B:TERM@120` does before the time limit: only
       the batch shell gets SIGTERM; it must forward it to the trainer and requeue the job itself.
    2. `scontrol requeue` is a preemption: Slurm signals everything and requeues the job.
    The payload saves only on SIGTERM, so each attempt starting where the previous one stopped
    proves the whole chain, including the run directory derived from the job id.
    The hold file keeps the payload counting until the test lets it finish: a signal that takes
    seconds to travel (a loaded machine) cannot find the attempt already done.
    """
    hold = tmp_path / "hold"
    hold.touch()
    env = {
        **job_env,
        "TRAIN_CMD": str(PAYLOADS / "counter.py"),
        "ROLLOUT_ENGINE": "none",
        "SANDBOX": "0",
        "COUNTER_STEPS": "24",
        "COUNTER_STEP_S": "0.1",
        "COUNTER_HOLD": str(hold),
    }
    job = slurm_cluster.submit(
        TRAIN,
        "recipes/tiny-cpu.yaml",
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "job-%j.out")),
    )
    run_dir = Path(env["RUNS_ROOT"]) / f"rest-megatron-train-{job}"
    progress = run_dir / "progress"

    def past(step: int) -> bool:
        return progress.exists() and int(progress.read_text() or 0) >= step

    _wait_for(lambda: past(3), 180, "first attempt made no progress", slurm_cluster, job)
    slurm_cluster.slurm("scancel", "--batch", "--signal=TERM", str(job))
    _release_requeued(slurm_cluster, job, restarts=1)
    _wait_for(
        lambda: len(_events(run_dir)) >= 3 and past(_events(run_dir)[1]["step"] + 3),
        180,
        "second attempt made no progress",
        slurm_cluster,
        job,
    )
    slurm_cluster.slurm("scontrol", "requeue", str(job))
    # The second attempt has saved before the hold goes, so only the third one may finish.
    _wait_for(
        lambda: len(_events(run_dir)) >= 4,
        120,
        "second attempt did not save on the preemption",
        slurm_cluster,
        job,
    )
    hold.unlink()
    _release_requeued(slurm_cluster, job, restarts=2)
    record = slurm_cluster.wait_job(job, timeout_s=180)
    log = _log(record)
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "2", log[-4000:]

    events = _events(run_dir)
    assert [e["event"] for e in events] == ["start", "sigterm", "start", "sigterm", "start", "done"], events
    first_stop, second_stop = events[1]["step"], events[3]["step"]
    assert events[0] == {"event": "start", "restart": 0, "from_step": 0, "world": 2}
    assert events[2] == {"event": "start", "restart": 1, "from_step": first_stop, "world": 2}
    assert events[4] == {"event": "start", "restart": 2, "from_step": second_stop, "world": 2}
    assert 3 <= first_stop < second_stop and events[5]["step"] == max(24, second_stop)
    # Only the time-limit path requeues from inside the job; the preemption was requeued by Slurm.
    assert log.count("phase: requeue") == 1 and log.count("SIGTERM: forwarding to the trainer") == 2
    assert f"logging.run_dir={run_dir} checkpoint.resume=auto" in log


@pytest.mark.timeout(300)
def test_failing_rank_fails_the_job(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    """Rank 1 raises: the job fails fast with a non-zero exit and its log names rank 1 first."""
    env = {
        **job_env,
        "TRAIN_CMD": str(PAYLOADS / "fail_rank.py"),
        "LAUNCH_OVERRIDES": "0",
        "SANDBOX": "0",
        "FAIL_RANK": "1",
    }
    started = time.monotonic()
    job = slurm_cluster.submit(
        TRAIN, "unused", env=env, cwd=REPO, sbatch_opts=("--output", str(tmp_path / "job-%j.out"))
    )
    record = slurm_cluster.wait_job(job, timeout_s=240)
    log = _log(record)
    assert record["JobState"] == "FAILED" and record["ExitCode"] != "0:0", log[-4000:]
    # The surviving rank sleeps for 600 s; kill-on-bad-exit ends the job long before.
    assert time.monotonic() - started < 240
    failures = re.findall(r"failed: \[rank(\d)\] on node (rmnode\d): (.*)", log)
    assert [(rank, message) for rank, _, message in failures] == [
        ("1", "RuntimeError: rank 1 fails on purpose")
    ], log[-4000:]
    assert "error: trainer failed" in log


@pytest.mark.timeout(300)
def test_failing_service_fails_the_job(
    slurm_cluster: LocalSlurmCluster, job_env: dict[str, str], tmp_path: Path
) -> None:
    """A rollout server that cannot start ends the job at once, not after the health-wait timeout."""
    env = {
        **job_env,
        "TRAIN_CMD": str(PAYLOADS / "counter.py"),
        "ROLLOUT_ENGINE": "embedded",
        "ROLLOUT_MODEL": str(tmp_path / "no-such-model"),
        "SANDBOX": "0",
        "SERVICE_TIMEOUT_S": "600",
    }
    started = time.monotonic()
    job = slurm_cluster.submit(
        TRAIN,
        "recipes/tiny-cpu.yaml",
        env=env,
        cwd=REPO,
        sbatch_opts=("--output", str(tmp_path / "job-%j.out")),
    )
    record = slurm_cluster.wait_job(job, timeout_s=240)
    log = _log(record)
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "1:0", log[-4000:]
    assert "error: services step ended" in log and "[counter]" not in log
    assert time.monotonic() - started < 240
