"""nsjail backend: the same view as bubblewrap, built with nsjail's flags.

Used when `nsjail` is on PATH (it is not packaged in Debian; build it from
https://github.com/google/nsjail). nsjail's own rlimits are disabled (`--disable_rlimits`) because
the launcher applies ours, the same way for every backend. As root, nsjail maps the call's pool
uid into the jail; otherwise it maps the current user. NOTE: the development machine has no nsjail,
so this command line is checked by unit tests only; `probe()` runs it for real before use.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

from tools_sandbox.backends.common import (
    MASKED_FILES,
    SANDBOX_WORKDIR,
    Launch,
    launcher_argv,
    readonly_binds,
    root_dirs,
    sandbox_env,
)

INSTALL_FIX = "build it from https://github.com/google/nsjail and put `nsjail` on PATH"


class NsjailBackend:
    """Build `nsjail -Mo ... -- python launcher.py` command lines."""

    name = "nsjail"
    weak = False

    def __init__(self, nsjail: str | None = None, *, seccomp: bool = True, python: str | None = None) -> None:
        self.nsjail = nsjail or shutil.which("nsjail") or "nsjail"
        self.python = python
        self.seccomp = seccomp
        self.as_root = os.geteuid() == 0

    wants_seccomp_fd = False

    def command(self, launch: Launch, seccomp_fd: int | None = None) -> tuple[list[str], dict[str, str]]:
        """Return (argv, environment) for the host process that runs `launch`."""
        argv = [
            self.nsjail,
            "--mode",
            "o",
            "--really_quiet",
            "--disable_rlimits",
            "--time_limit",
            "0",
            "--hostname",
            "sandbox",
            "--cwd",
            SANDBOX_WORKDIR,
        ]
        if self.as_root and launch.uid is not None:
            # Map the pool uid to itself: outside the jail the call is that unprivileged uid.
            argv += ["--user", f"{launch.uid}:{launch.uid}:1", "--group", f"{launch.uid}:{launch.uid}:1"]
        argv += ["-R", "/usr"]
        for path, target in root_dirs():
            argv += ["--symlink", f"{target}:{path}"] if target else ["-R", path]
        argv += ["-R", "/etc"]
        for secret in MASKED_FILES:
            if os.path.exists(secret):
                argv += ["-R", f"/dev/null:{secret}"]
        argv += ["-R", "/dev/null", "-R", "/dev/zero", "-R", "/dev/urandom", "-T", "/tmp", "-T", "/dev/shm"]
        for path in readonly_binds(launch.readonly_paths, self.python):
            argv += ["-R", path]
        argv += ["-B", f"{launch.scratch}:{SANDBOX_WORKDIR}"]
        for key, value in sandbox_env(SANDBOX_WORKDIR, "/tmp").items():
            argv += ["--env", f"{key}={value}"]
        # Inside the jail the process already is the pool uid, so the launcher gets no uid to drop to.
        unprivileged = dataclasses.replace(launch, uid=None)
        argv += [
            "--",
            *launcher_argv(unprivileged, SANDBOX_WORKDIR, self.python, seccomp=self.seccomp, pdeathsig=True),
        ]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def probe(nsjail: str | None = None, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Run `/bin/true` in a jail; return (works, detail or fix)."""
    path = nsjail or shutil.which("nsjail")
    if not path:
        return False, f"`nsjail` not found on PATH; {INSTALL_FIX}"
    argv = [path, "--mode", "o", "--really_quiet", "--disable_rlimits", "-R", "/", "--", "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nsjail failed to start ({exc})"
    if done.returncode != 0:
        return False, f"nsjail cannot create namespaces: {done.stderr.decode(errors='replace').strip()}"
    return True, f"{path}: pid/net/ipc/uts/mount/user namespaces, seccomp, rlimits"
