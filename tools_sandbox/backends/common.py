"""What every backend shares: the launch description, the launcher command and the file-system view."""

from __future__ import annotations

import functools
import json
import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tools_sandbox.limits import Limits

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../tools_sandbox
LAUNCHER = PACKAGE_DIR / "confine" / "launcher.py"
SANDBOX_WORKDIR = "/sandbox"  # where namespace backends mount the scratch directory
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Files a namespace backend hides even though the sandbox uid could not read them anyway.
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")


@dataclass(frozen=True)
class Launch:
    """One sandbox process to start.

    `run` is the mode part of the launcher config: `{"mode": "exec", "argv": [...]}`,
    `{"mode": "python", "path": "main.py"}` or `{"mode": "worker"}`.
    """

    scratch: Path
    """Host directory that becomes the writable working directory."""
    limits: Limits
    run: dict[str, Any]
    uid: int | None = None
    """Unprivileged uid for this call (root services only), from `UidPool`."""
    cpu_hard_s: int | None = None
    """Hard RLIMIT_CPU for long-lived session workers, which raise their soft limit per call."""
    readonly_paths: tuple[str, ...] = ()
    """Extra host paths made visible read-only (user tool modules)."""
    site: bool = True
    """Put site-packages on sys.path (the Python tool, BFCL, user tools need them)."""
    sys_path: tuple[str, ...] = ()
    """Extra import paths inside the sandbox (user tool modules)."""


class Backend(Protocol):
    """An isolation backend: it only builds the host command that starts the launcher confined."""

    name: str
    weak: bool
    """True for the fallback: it logs that its isolation is weaker."""
    wants_seccomp_fd: bool
    """True if the backend installs the seccomp filter itself from a file descriptor."""

    def command(self, launch: Launch, seccomp_fd: int | None = None) -> tuple[list[str], dict[str, str]]:
        """Return (argv, environment) for the host process that runs `launch`."""
        ...


def sandbox_env(workdir: str, tmpdir: str) -> dict[str, str]:
    """The whole environment user code sees: nothing of the service's (secrets live there)."""
    return {
        "PATH": SANDBOX_PATH,
        "HOME": workdir,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def launcher_argv(launch: Launch, workdir: str, python: str | None = None, **confine: Any) -> list[str]:
    """`python -I -S -B launcher.py <config>`; `confine` adds backend-specific keys (landlock, ...).

    `python` is the sandbox's interpreter (default: the service's own, so the same packages exist).
    """
    rlimits = launch.limits.rlimits()
    if launch.cpu_hard_s is not None:
        rlimits["cpu_hard"] = int(launch.cpu_hard_s)
    same_python = python is None or python == sys.executable
    config = {
        "workdir": workdir,
        "rlimits": rlimits,
        "uid": launch.uid,
        "gid": launch.uid,
        "package_parent": str(PACKAGE_DIR.parent),
        # Our own interpreter: append its site-packages directly instead of running site.main().
        "site": launch.site and not same_python,
        "site_dirs": site_dirs() if launch.site and same_python else [],
        "sys_path": list(launch.sys_path),
        **launch.run,
        **confine,
    }
    # -I: ignore PYTHON* variables and the user site; -S: site is imported later, after confinement;
    # -B: the read-only view could not take .pyc files anyway.
    return [python or sys.executable, "-I", "-S", "-B", str(LAUNCHER), json.dumps(config)]


@functools.lru_cache(maxsize=1)
def site_dirs() -> list[str]:
    """This interpreter's site-packages directories (the venv's, in a venv)."""
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def python_paths(python: str | None = None) -> list[str]:
    """Host directories the sandboxed interpreter needs: the venv and the base installation."""
    if python and python != sys.executable:
        return [str(Path(python).resolve().parent.parent)]
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        str(Path(sys.executable).resolve().parent.parent),
    }
    return sorted(p for p in candidates if p and os.path.isdir(p))


def readonly_binds(extra: tuple[str, ...] = (), python: str | None = None) -> list[str]:
    """Deduplicated host paths to bind read-only besides /usr and /etc (nested ones dropped)."""
    wanted = [*python_paths(python), str(PACKAGE_DIR), *extra]
    paths: list[str] = []
    for path in sorted({os.path.abspath(p) for p in wanted if os.path.exists(p)}):
        if path == "/":
            raise ValueError(
                "refusing to expose the whole file system to the sandbox; a tool module or the "
                "sandbox interpreter resolved to '/': give a path inside a directory"
            )
        if path == "/usr" or path.startswith("/usr/"):
            continue
        if any(path == kept or path.startswith(kept.rstrip("/") + "/") for kept in paths):
            continue
        paths.append(path)
    return paths


def root_dirs() -> list[tuple[str, str | None]]:
    """Top-level system dirs as (path, symlink target or None): merged-/usr systems link /bin etc."""
    out = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            out.append((name, os.readlink(name)))
        elif os.path.isdir(name):
            out.append((name, None))
    return out
