"""Isolation backends, best first: bubblewrap, nsjail, then the weaker rlimit fallback.

`detect_backends()` reports what works on this machine (used by `rest-megatron doctor`);
`select_backend("auto")` returns the best one that works and logs loudly when that is the fallback.
Every backend runs the same in-sandbox launcher (`confine/launcher.py`), so the caps are
identical; backends differ only in how much of the host the sandbox can see.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

from tools_sandbox.backends import bubblewrap, nsjail
from tools_sandbox.backends.bubblewrap import BubblewrapBackend
from tools_sandbox.backends.common import Backend, Launch
from tools_sandbox.backends.nsjail import NsjailBackend
from tools_sandbox.backends.rlimit import RlimitBackend

__all__ = ["Backend", "BackendStatus", "Launch", "BACKEND_NAMES", "detect_backends", "select_backend"]

BACKEND_NAMES = ("bubblewrap", "nsjail", "rlimit")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendStatus:
    """Whether one backend works here; `detail` says what it isolates, or why not and the fix."""

    name: str
    available: bool
    detail: str
    weak: bool = False


def _rlimit_status(python: str | None) -> BackendStatus:
    if platform.system() != "Linux":
        return BackendStatus("rlimit", False, "needs Linux (rlimits, seccomp, Landlock)", weak=True)
    ok, detail = RlimitBackend(python=python).probe()
    return BackendStatus("rlimit", ok, detail, weak=True)


def detect_backends(python: str | None = None) -> list[BackendStatus]:
    """Probe every backend for real (each starts a trivial sandbox); best first.

    Args:
        python: the sandbox interpreter to check (default: this one).
    """
    ok, detail = bubblewrap.probe()
    statuses = [BackendStatus("bubblewrap", ok, detail)]
    ok, detail = nsjail.probe()
    statuses.append(BackendStatus("nsjail", ok, detail))
    statuses.append(_rlimit_status(python))
    return statuses


def select_backend(name: str = "auto", *, seccomp: bool = True, python: str | None = None) -> Backend:
    """Return the backend called `name`, or the best available one for "auto".

    Raises:
        ValueError: unknown name, or the named backend does not work here (the message has the fix).
    """
    if name not in ("auto", *BACKEND_NAMES):
        raise ValueError(f"unknown sandbox backend {name!r}; choose one of auto, {', '.join(BACKEND_NAMES)}.")
    if python is not None and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ValueError(
            f"sandbox interpreter {python!r} is not an executable file; give the path of a python3."
        )
    statuses = {s.name: s for s in detect_backends(python)}
    if name == "auto":
        name = next((s.name for s in statuses.values() if s.available), "")
        if not name:
            details = "; ".join(f"{s.name}: {s.detail}" for s in statuses.values())
            raise ValueError(f"no sandbox backend works on this machine ({details}).")
    status = statuses[name]
    if not status.available:
        raise ValueError(f"sandbox backend {name!r} is not available: {status.detail}")
    if name == "bubblewrap":
        return BubblewrapBackend(seccomp=seccomp, python=python)
    if name == "nsjail":
        return NsjailBackend(seccomp=seccomp, python=python)
    backend = RlimitBackend(seccomp_enabled=seccomp, python=python)
    log.warning(
        "!!! sandbox backend 'rlimit' gives WEAKER isolation than bubblewrap or nsjail: %s. "
        "Install bubblewrap (`apt-get install bubblewrap`) for namespaces. !!!",
        backend.describe(),
    )
    return backend
