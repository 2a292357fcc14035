"""The fallback backend: rlimits + Landlock + seccomp + an unprivileged uid, no namespaces.

For machines where neither bubblewrap nor nsjail can create namespaces (containers without
user-namespace support). Its isolation is weaker and the service logs so at start. Covered here:

- CPU, memory, process count, file size, open files, output size, wall time (same as the others);
- no network: seccomp fails every `socket()`; Landlock (ABI 4+) also denies TCP bind/connect;
- writes only beneath the scratch directory: Landlock, when the kernel has it (5.13+);
- `kill -1`, process groups: seccomp; a root service also gives each call its own uid, so the
  kernel itself stops signals to anyone else and an after-call `kill -1` as that uid sweeps up;
- no background process survives: `setsid`/`setpgid` are denied, so the process group kill at
  the end of a call reaches every descendant.

Not covered (use bubblewrap): the sandbox *sees* the host file system and process list (reads
follow ordinary permissions, so world-readable files are readable); without Landlock it can write
wherever its uid may (world-writable /tmp, /dev/shm); without root it runs as the service's own
uid, so a targeted `kill(pid)` of a service process and reading the service user's files work.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from tools_sandbox.backends.common import PACKAGE_DIR, Launch, launcher_argv, sandbox_env
from tools_sandbox.confine import landlock, seccomp


class RlimitBackend:
    """Run the launcher directly, in the scratch directory, confined by the kernel features above."""

    name = "rlimit"
    weak = True

    def __init__(self, *, seccomp_enabled: bool = True, python: str | None = None) -> None:
        self.landlock_abi = landlock.abi()
        self.seccomp = seccomp_enabled and seccomp.supported()
        self.as_root = os.geteuid() == 0
        self.python = python or sys.executable

    wants_seccomp_fd = False

    def command(self, launch: Launch, seccomp_fd: int | None = None) -> tuple[list[str], dict[str, str]]:
        """Return (argv, environment) for the host process that runs `launch`."""
        workdir = str(launch.scratch)
        confine = {
            "seccomp": self.seccomp,
            "pdeathsig": True,  # no bwrap in between: the launcher itself dies with the service
            "landlock": [workdir] if self.landlock_abi else None,
            # Without a per-call uid, RLIMIT_NPROC also counts the service user's own processes.
            "nproc_shared_with_uid": not self.as_root,
        }
        return launcher_argv(launch, workdir, self.python, **confine), sandbox_env(workdir, workdir)

    def probe(self, timeout_s: float = 10.0) -> tuple[bool, str]:
        """Check that an unprivileged uid can run the interpreter; return (works, detail or fix)."""
        if not self.as_root:
            return True, self.describe()
        # uid 65534 (nobody), not a pool uid: this probe may run beside a live server.
        checks = (
            (
                ["import ctypes, json"],
                f"an unprivileged uid cannot run {self.python} (is it under a private "
                "directory such as /root?); install Python world-readable, "
                "or pass --sandbox-python /usr/bin/python3",
            ),
            # The worker imports tools_sandbox from its checkout after dropping to the call's uid.
            (
                [
                    "import os, sys; os.listdir(sys.argv[1]); open(sys.argv[2]).close()",
                    str(PACKAGE_DIR),
                    str(PACKAGE_DIR / "worker.py"),
                ],
                f"an unprivileged uid cannot read {PACKAGE_DIR} (a private directory on the way, "
                "such as one from `mktemp -d`?); make it and its parents world-readable (chmod o+rx), "
                "or use bubblewrap",
            ),
        )
        for code, problem in checks:
            try:
                done = subprocess.run(
                    [self.python, "-I", "-S", "-c", *code],
                    user=65534,
                    group=65534,
                    extra_groups=[],
                    capture_output=True,
                    timeout=timeout_s,
                    check=False,
                    cwd="/",
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                done = exc
            if not isinstance(done, subprocess.CompletedProcess) or done.returncode != 0:
                return False, problem
        return True, self.describe()

    def describe(self) -> str:
        """One line on what this fallback does and does not isolate, for logs and `doctor`."""
        parts = [
            "WEAKER isolation: no namespaces (the host file system and processes stay visible)",
            f"Landlock ABI {self.landlock_abi}"
            if self.landlock_abi
            else "NO Landlock (writes follow uid permissions)",
            "seccomp" if self.seccomp else f"NO seccomp (no syscall table for {platform.machine()})",
            "per-call uids" if self.as_root else "same uid as the service (run as root for per-call uids)",
        ]
        return "; ".join(parts)
