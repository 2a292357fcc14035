"""Resource caps for one sandboxed call or one stateful session.

The server holds one `Limits` (its maxima). A request may ask for less (SandboxFusion's `run_timeout`
and `memory_limit_MB`) but never for more: `Limits.narrowed` clamps to the server's values, because
SandboxFusion clients send their own defaults and a hard error on every such request would break
compatibility for no gain in safety.

Each cap maps to one kernel mechanism, applied by `confine/launcher.py` inside the sandbox:

| field            | mechanism                                   |
|------------------|---------------------------------------------|
| `cpu_s`          | RLIMIT_CPU (SIGXCPU, then SIGKILL)          |
| `wall_s`         | the service kills the whole process tree    |
| `memory_mb`      | RLIMIT_AS, per process                      |
| `max_processes`  | RLIMIT_NPROC for the call's own uid / userns|
| `file_size_mb`   | RLIMIT_FSIZE                                |
| `open_files`     | RLIMIT_NOFILE                               |
| `output_bytes`   | the service stops keeping output, adds a marker |
| `scratch_mb`     | a size-capped tmpfs on the scratch directory (root service) |
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Caps for one call. All values must be positive."""

    cpu_s: float = 10.0
    """CPU seconds for the whole call (each process; RLIMIT_CPU is per process)."""
    wall_s: float = 10.0
    """Wall-clock seconds before the service kills the call's whole process tree."""
    memory_mb: int = 1024
    """Address-space cap per process, in MiB (RLIMIT_AS)."""
    max_processes: int = 64
    """Processes and threads the call may have at once (RLIMIT_NPROC)."""
    file_size_mb: int = 64
    """Largest file the call may write, in MiB (RLIMIT_FSIZE)."""
    open_files: int = 256
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    output_bytes: int = 256 * 1024
    """Bytes of stdout (and, separately, stderr) kept; the rest is dropped and a marker added."""
    scratch_mb: int = 256
    """Scratch space of one call or one session in all, in MiB: the size of the tmpfs a root service
    mounts on its scratch directory (writes past it fail with ENOSPC while the code runs)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Limits.{field.name}={value!r} is not a number; give a positive number.")
            if value <= 0:
                raise ValueError(f"Limits.{field.name}={value!r} must be positive; give a value above 0.")

    def narrowed(self, *, wall_s: float | None = None, memory_mb: float | None = None) -> Limits:
        """Return a copy with a request's wall time and memory, clamped to this object's values.

        Args:
            wall_s: requested wall seconds; None or a non-positive value keeps the server's value.
            memory_mb: requested MiB; None or a non-positive value (SandboxFusion sends -1) keeps it.
        """
        changes: dict[str, Any] = {}
        if wall_s is not None and wall_s > 0:
            changes["wall_s"] = min(float(wall_s), self.wall_s)
            # A short wall limit with a long CPU limit would be meaningless; keep CPU <= wall.
            changes["cpu_s"] = min(self.cpu_s, changes["wall_s"])
        if memory_mb is not None and memory_mb > 0:
            changes["memory_mb"] = int(max(16, min(int(memory_mb), self.memory_mb)))
        return dataclasses.replace(self, **changes) if changes else self

    def rlimits(self) -> dict[str, int]:
        """The rlimit values the in-sandbox launcher applies (bytes, seconds, counts)."""
        return {
            # RLIMIT_CPU counts whole seconds; round up so a 0.5 s cap is not "unlimited".
            "cpu": max(1, math.ceil(self.cpu_s)),
            "as": int(self.memory_mb) * MIB,
            "nproc": int(self.max_processes),
            "fsize": int(self.file_size_mb) * MIB,
            "nofile": int(self.open_files),
        }


def truncation_marker(dropped: int, limit: int) -> str:
    """The text appended to an output stream that went over `limit` bytes."""
    return f"\n[... output truncated: {dropped} more bytes over the {limit}-byte limit ...]\n"
