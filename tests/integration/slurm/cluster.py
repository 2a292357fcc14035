"""A real, throw-away Slurm cluster on this machine: munged, one slurmctld, N slurmd's, fake GPUs.

    python -m tests.integration.slurm.cluster up      # install if needed, start, print SLURM_CONF
    python -m tests.integration.slurm.cluster down    # stop the cluster that `up` left running

Everything is Debian's Slurm 22.05 (`slurmctld`, `slurmd`, `slurm-client`, `munge`), installed with
apt when missing (root only). The daemons run without systemd and keep all their state (config,
munge key and socket, spool, logs, PID files) in one temporary directory, so nothing under /etc
changes except one marked line in /etc/hosts that names the emulated nodes.

How one machine becomes a cluster:

- Debian's slurmd is built for several slurmd per host: `slurmd -N rmnode1`, each on its own port
  (`NodeName=rmnode[1-2] Port=[p-q]`). The node names resolve to 127.0.0.1 through /etc/hosts, so a
  job script's head-node discovery (`scontrol show hostnames`) yields names that work as addresses.
- GPUs are declared through `GresTypes=gpu` and a gres.conf whose `File=` entries are symlinks to
  /dev/null: the scheduler accounts for them (and `sbatch --test-only` judges requests against
  them), jobs see `CUDA_VISIBLE_DEVICES`, and nothing needs a real device.
- `EnforcePartLimits=ALL`: without it an impossible request pends forever instead of failing.
- Each daemon runs in its own UTS namespace whose hostname is its name in the cluster (`rmctld`,
  `rmnode1`, ...), so job processes see their node's name as the hostname, and nothing depends on
  what the machine's own hostname resolves to.
- Every daemon binds 127.0.0.1 only: those names resolve to it, `NodeAddr=127.0.0.1`, and
  `CommunicationParameters=NoCtldInAddrAny,NoInAddrAny` makes Slurm bind the resolved address instead
  of 0.0.0.0. A private munge socket (`AuthInfo=socket=...`) leaves any munged on the machine alone.

Daemons are stopped by the PIDs in their PID files, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
"""What `ensure_installed` installs (with --no-install-recommends)."""

HOSTS_MARK = "# rest-megatron local Slurm test cluster"
"""Comment that marks our line in /etc/hosts (added once, left in place: it only names loopback)."""

NODE_PREFIX = "rmnode"
"""Emulated node names are rmnode1, rmnode2, ..."""

CONTROLLER = "rmctld"
"""The controller's host name (its UTS namespace's hostname)."""

STATE_FILE = Path(tempfile.gettempdir()) / "rest-megatron-slurm.state"
"""Where `up` on the command line records the state dir, for `down`."""


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (not root, no apt); the message says why."""


def missing_packages() -> list[str]:
    """The Debian packages of DEBIAN_PACKAGES that are not installed."""
    missing = []
    for package in DEBIAN_PACKAGES:
        query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if "install ok installed" not in query.stdout:
            missing.append(package)
    return missing


def ensure_installed() -> None:
    """Install Debian's Slurm and munge when missing.

    Raises ClusterUnavailable without root or apt (the tests skip), RuntimeError when apt fails.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local Slurm cluster needs root (daemons, /etc/hosts, apt)")
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        raise ClusterUnavailable(
            "no dpkg/apt-get: install slurmctld, slurmd, slurm-client and munge yourself"
        )
    missing = missing_packages()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d refuses service starts in containers; where it does not, the Debian units start
    # daemons with the default config. Ours never use it (own config, own munge socket).
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # root with apt: a failure here is an error, never a skip
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def ensure_hosts(names: list[str], hosts_file: Path = Path("/etc/hosts")) -> None:
    """Make every name resolve to 127.0.0.1 with one marked /etc/hosts line (idempotent)."""
    lines = hosts_file.read_text().splitlines()
    ours = [line for line in lines if line.endswith(HOSTS_MARK)]
    known = {name for line in ours for name in line.split("#", 1)[0].split()[1:]}
    if set(names) <= known:
        return
    line = f"127.0.0.1 {' '.join(sorted(known | set(names)))} {HOSTS_MARK}"
    kept = [existing for existing in lines if not existing.endswith(HOSTS_MARK)]
    hosts_file.write_text("\n".join([*kept, line]) + "\n")


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports that are free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65000:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


@dataclass
class LocalSlurmCluster:
    """One slurmctld and `num_nodes` slurmd's on this machine, with `gpus_per_node` fake GPUs each."""

    state_dir: Path
    """Everything the cluster writes lives here (removed by `stop(remove=True)`)."""

    num_nodes: int = 2
    gpus_per_node: int = 8
    cpus_per_node: int = 16
    """Declared, not real: `SlurmdParameters=config_overrides` lets slurmd trust the config."""

    memory_mb: int = 64000
    nodes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [f"{NODE_PREFIX}{i}" for i in range(1, self.num_nodes + 1)]

    @property
    def conf(self) -> Path:
        """The slurm.conf; clients find it through SLURM_CONF (see `env`)."""
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.state_dir / "munge" / "munge.socket"

    def env(self) -> dict[str, str]:
        """os.environ plus what a Slurm client needs to talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _pid_files(self) -> list[Path]:
        run = self.state_dir / "run"
        slurmds = [run / f"slurmd-{node}.pid" for node in self.nodes]
        return [*slurmds, run / "slurmctld.pid", self.state_dir / "munge" / "munged.pid"]

    def write_config(self) -> None:
        """Write the munge key, slurm.conf, gres.conf and the fake GPU device files."""
        for sub in ("etc", "run", "log", "state", "dev", *(f"spool/{n}" for n in self.nodes)):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)  # munged (as the munge user) must traverse it
        # munged wants its socket directory world-traversable and its key private.
        munge_dir, key_dir = self.state_dir / "munge", self.state_dir / "munge" / "key"
        key_dir.mkdir(parents=True, exist_ok=True)
        munge_dir.chmod(0o755)
        key_dir.chmod(0o700)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (munge_dir, key_dir, key):
            shutil.chown(path, "munge", "munge")
        for i in range(self.gpus_per_node):
            device = self.state_dir / "dev" / f"nvidia{i}"
            if not device.is_symlink():
                device.symlink_to("/dev/null")

        ctld_port = free_ports(1)
        node_port = free_ports(self.num_nodes)
        d = self.state_dir
        nodes = f"{NODE_PREFIX}[1-{self.num_nodes}]"
        ports = f"[{node_port}-{node_port + self.num_nodes - 1}]" if self.num_nodes > 1 else str(node_port)
        gres = f"Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        node_line = (
            f"NodeName={nodes} NodeHostname={nodes} NodeAddr=127.0.0.1 Port={ports} "
            f"CPUs={self.cpus_per_node} RealMemory={self.memory_mb} {gres} State=UNKNOWN"
        )
        self.conf.write_text(f"""\
# Generated by tests/integration/slurm/cluster.py: a throw-away cluster on 127.0.0.1.
ClusterName=restmegatron
SlurmctldHost={CONTROLLER}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
EnforcePartLimits=ALL
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=20
MinJobAge=600
InactiveLimit=0
MessageTimeout=20
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
{node_line}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        gres_lines = ["AutoDetect=off"]
        if self.gpus_per_node:
            last = self.gpus_per_node - 1
            gres_lines.append(f"NodeName={nodes} Name=gpu File={d}/dev/nvidia[0-{last}]")
        (d / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        (d / "etc" / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")

    def start(self, timeout_s: float = 60.0) -> None:
        """Start munged, slurmctld and the slurmd's; return once every node is idle."""
        ensure_hosts([CONTROLLER, *self.nodes])
        self.write_config()
        d = self.state_dir
        munge = d / "munge"
        self._run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--socket={self.munge_socket}",
                f"--key-file={munge / 'key' / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'key' / 'munged.seed'}",
            ]
        )
        self._run(_as_host(CONTROLLER, "slurmctld", "-f", str(self.conf)))
        for node in self.nodes:
            self._run(_as_host(node, "slurmd", "-f", str(self.conf), "-N", node))
        self.wait_idle(timeout_s)

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}\n{self.logs()}")

    def node_states(self) -> dict[str, str]:
        """Node name -> sinfo's short state (idle, alloc, comp, ...); empty while slurmctld is not up."""
        query = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env(), capture_output=True, text=True
        )
        return dict(line.split()[:2] for line in query.stdout.splitlines() if len(line.split()) >= 2)

    def wait_idle(self, timeout_s: float) -> None:
        """Wait until sinfo reports every node idle (raises with the daemon logs if it does not)."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if len(states) == len(self.nodes) and set(states.values()) == {"idle"}:
                return
            time.sleep(0.5)
        raise RuntimeError(f"nodes not idle after {timeout_s}s: {states!r}\n{self.logs()}")

    def slurm(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (sbatch, scontrol, scancel, ...) against this cluster."""
        done = subprocess.run(
            list(args), env={**self.env(), **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def submit(
        self, script: Path, *args: str, env: dict[str, str], cwd: Path, sbatch_opts: tuple[str, ...] = ()
    ) -> int:
        """sbatch a script (environment exported, as users do) and return the job id."""
        done = self.slurm("sbatch", "--parsable", *sbatch_opts, str(script), *args, env=env, cwd=cwd)
        return int(done.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, StdOut, ...)."""
        out = self.slurm("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def wait_job(
        self,
        job_id: int,
        timeout_s: float,
        states: tuple[str, ...] = (
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ),
    ) -> dict[str, str]:
        """Poll until the job reaches one of `states` (default: finished); returns its record.

        Faster than `sbatch --wait`, whose back-off polling adds up to half a minute per job.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.job(job_id)
            if record["JobState"] in states:
                return record
            time.sleep(0.5)
        record = self.job(job_id)
        self.slurm("scancel", str(job_id), check=False)
        raise TimeoutError(
            f"job {job_id} still {record['JobState']} after {timeout_s}s; cancelled.\n"
            f"{_tail(Path(record.get('StdOut', '/nonexistent')))}"
        )

    def stepds(self, job_id: int) -> list[str]:
        """Titles of the slurmstepd processes still serving job `job_id` ("slurmstepd: [7.batch]", ...).

        Every emulated node shares this host, so /proc shows them all. A node can be idle in sinfo
        while a stepd of the job's previous attempt is still exiting.
        """
        titles = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                title = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if title.startswith(f"slurmstepd: [{job_id}."):
                titles.append(title)
        return titles

    def logs(self, tail: int = 30) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted((self.state_dir / "log").glob("*.log")) + [self.state_dir / "munge" / "munged.log"]:
            if log.exists():
                parts.append(
                    f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-tail:])
                )
        return "\n".join(parts)

    def cancel_all(self, timeout_s: float = 40.0) -> None:
        """Cancel every job and wait until none is left, so no slurmstepd outlives its slurmd."""
        if not self.conf.exists():
            return
        jobs = self.slurm("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if not jobs:
            return
        self.slurm("scancel", *jobs, check=False)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.slurm("squeue", "-h", "-o", "%i", check=False)
            if done.returncode == 0 and not done.stdout.split():
                return
            time.sleep(0.5)

    def stop(self, remove: bool = True, timeout_s: float = 20.0) -> None:
        """Cancel the jobs, stop the daemons by their PID files (TERM, then KILL), remove the state dir."""
        self.cancel_all()
        pids = []
        for pid_file in self._pid_files():
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                continue
        deadline = time.monotonic() + timeout_s
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _as_host(hostname: str, *command: str) -> list[str]:
    """`command` in a new UTS namespace whose hostname is `hostname` (the daemon keeps it)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *command]


def _tail(path: Path, lines: int = 60) -> str:
    """The last lines of a job log, for assertion messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone; daemons are not our children, so this rarely matters.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def main(argv: list[str]) -> int:
    """`up` (install, start, print the SLURM_CONF line) or `down` (stop what `up` started)."""
    if argv[:1] == ["up"]:
        ensure_installed()
        cluster = LocalSlurmCluster(Path(tempfile.mkdtemp(prefix="rest-megatron-slurm-")))
        cluster.start()
        STATE_FILE.write_text(str(cluster.state_dir))
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    if argv[:1] == ["down"] and STATE_FILE.exists():
        LocalSlurmCluster(Path(STATE_FILE.read_text().strip())).stop()
        STATE_FILE.unlink()
        return 0
    print("usage: python -m tests.integration.slurm.cluster up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
