"""bubblewrap backend: new pid, network, ipc, uts and mount namespaces around the launcher.

Inside: a read-only view of /usr, /etc (secrets masked) and the Python installation; a fresh /dev,
/proc, and size-capped tmpfs /tmp and /dev/shm; the scratch directory writable at /sandbox. No
network (an empty network namespace with only a down loopback). Killing bwrap kills the pid
namespace, so no background process outlives the call.

Run as root, bwrap sets up the mounts with its privileges and the launcher then drops to the
call's own uid from the uid pool (the sandbox must never run as root: root would pass file
permission checks and could remount). Run as an ordinary user, bwrap uses an unprivileged user
namespace instead, and further user namespaces are disabled inside.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from tools_sandbox.backends.common import (
    MASKED_FILES,
    SANDBOX_WORKDIR,
    Launch,
    launcher_argv,
    readonly_binds,
    root_dirs,
    sandbox_env,
)
from tools_sandbox.limits import MIB

INSTALL_FIX = "install it (Debian/Ubuntu: `apt-get install bubblewrap`)"
USERNS_FIX = (
    "unprivileged user namespaces are off: run the service as root, or enable them "
    "(`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu 24.04 also "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`)"
)


@functools.lru_cache(maxsize=8)
def _help_text(bwrap: str) -> str:
    try:
        return subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


class BubblewrapBackend:
    """Build `bwrap ... -- python launcher.py` command lines."""

    name = "bubblewrap"
    weak = False

    def __init__(self, bwrap: str | None = None, *, seccomp: bool = True, python: str | None = None) -> None:
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.python = python
        self.seccomp = seccomp
        self.as_root = os.geteuid() == 0
        # Older bwrap (Ubuntu 22.04 ships 0.6) lacks these; the caps they add are documented as best-effort.
        self.has_size = "--size" in _help_text(self.bwrap)
        self.has_disable_userns = "--disable-userns" in _help_text(self.bwrap)

    def _namespace_args(self) -> list[str]:
        common = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try"]
        if self.as_root:
            # No user namespace: the launcher needs real CAP_SETUID to drop to the pool uid.
            return common
        extra = ["--disable-userns"] if self.has_disable_userns else []  # seccomp also blocks new userns
        return ["--unshare-user", *common, *extra, "--cap-drop", "ALL"]

    def filesystem_args(self, launch: Launch) -> list[str]:
        """Mount arguments for the read-only system view plus the writable scratch."""
        args = ["--ro-bind", "/usr", "/usr"]
        for path, target in root_dirs():
            args += ["--symlink", target, path] if target else ["--ro-bind", path, path]
        args += ["--ro-bind", "/etc", "/etc"]
        for secret in MASKED_FILES:
            if os.path.exists(secret):
                args += ["--ro-bind", "/dev/null", secret]
        tmp_size = str(int(launch.limits.file_size_mb) * MIB)
        args += ["--dev", "/dev", "--proc", "/proc"]
        size = ["--size", tmp_size] if self.has_size else []
        args += ["--perms", "1777", *size, "--tmpfs", "/tmp"]
        args += ["--perms", "1777", *size, "--tmpfs", "/dev/shm"]
        binds = readonly_binds(launch.readonly_paths, self.python)
        # bwrap copies the host's modes onto the parents it creates: /root (0700) would hide a
        # Python installed under it from the pool uid. Create the parents world-traversable first.
        parents = sorted({str(p) for path in binds for p in Path(path).parents if str(p) != "/"})
        for parent in parents:
            args += ["--perms", "0755", "--dir", parent]
        for path in binds:
            args += ["--ro-bind", path, path]
        args += ["--bind", str(launch.scratch), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
        return args

    wants_seccomp_fd = True
    """The executor passes the compiled filter on a pipe; bwrap installs it, so the launcher need not
    import ctypes (a few ms per call)."""

    def command(self, launch: Launch, seccomp_fd: int | None = None) -> tuple[list[str], dict[str, str]]:
        """Return (argv, environment) for the host process that runs `launch`."""
        argv = [
            self.bwrap,
            "--die-with-parent",
            *self._namespace_args(),
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        if self.seccomp and seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        for key, value in sandbox_env(SANDBOX_WORKDIR, "/tmp").items():
            argv += ["--setenv", key, value]
        argv += self.filesystem_args(launch)
        in_launcher = self.seccomp and seccomp_fd is None
        argv += ["--", *launcher_argv(launch, SANDBOX_WORKDIR, self.python, seccomp=in_launcher)]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def probe(bwrap: str | None = None, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Start a trivial sandbox with the real namespace flags; return (works, detail or fix)."""
    path = bwrap or shutil.which("bwrap")
    if not path:
        return False, f"`bwrap` not found on PATH; {INSTALL_FIX}"
    backend = BubblewrapBackend(path)
    argv = [path, "--die-with-parent", *backend._namespace_args(), "--ro-bind", "/", "/", "--", "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to start ({exc}); {USERNS_FIX}"
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        return False, f"bwrap cannot create namespaces ({message}); {USERNS_FIX}"
    mode = "as root, dropping to per-call uids" if backend.as_root else "unprivileged user namespace"
    return True, f"{path}: pid/net/ipc/uts/mount namespaces ({mode}), seccomp, rlimits"
