"""A pool of unprivileged uids, one per running call or live session (root services only).

Why a uid per call rather than one shared `nobody`: RLIMIT_NPROC counts processes per uid, so a
shared uid would make the process cap shared by every concurrent call (64 concurrent calls at a
cap of 64 would starve each other), and `kill -1` by one call would reach the others. With its own
uid, a call can only signal its own processes, and after the call `kill -1` *as that uid* removes
anything left, in any namespace, before the uid is reused.

The uids (default 1,900,000,000 upwards) have no /etc/passwd entry; nothing else on the machine
may use that range. Change it with `--uid-base` if it collides.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

DEFAULT_UID_BASE = 1_900_000_000
_KILL = shutil.which("kill") or "/bin/kill"


class UidPool:
    """Hand out uids `base .. base + size - 1`; `release` sweeps a uid's processes first."""

    def __init__(self, base: int = DEFAULT_UID_BASE, size: int = 256) -> None:
        if os.geteuid() != 0:
            raise ValueError("UidPool needs root; a non-root service runs calls under its own uid instead.")
        if not 1000 <= base <= 2**32 - 2 - size:
            raise ValueError(f"uid base {base} is out of range; pick one in [1000, {2**32 - 2 - size}].")
        self.base = base
        self.size = size
        self._free = list(range(base + size - 1, base - 1, -1))

    @property
    def free(self) -> int:
        """How many uids are available now."""
        return len(self._free)

    def acquire(self) -> int:
        """Take a uid; raises RuntimeError when all are in use (the caller's admission bound is wrong)."""
        if not self._free:
            raise RuntimeError(f"all {self.size} sandbox uids are in use")
        return self._free.pop()

    async def release(self, uid: int) -> None:
        """Kill every process of `uid`, then make it available again."""
        await sweep(uid)
        self._free.append(uid)

    def prepare_dir(self, path: Path, uid: int) -> None:
        """Give `uid` its scratch directory (mode 0700, so other calls cannot look in)."""
        os.chown(path, uid, uid)
        os.chmod(path, 0o700)


async def sweep(uid: int) -> None:
    """Send SIGKILL to every process of `uid` by running `kill -9 -1` as that uid.

    kill(-1) as an unprivileged uid reaches exactly the processes it may signal: its own, in every
    pid namespace. The helper itself is spared by the kernel.
    """
    argv = [_KILL, "-9", "--", "-1"] if os.path.exists(_KILL) else [
        sys.executable, "-I", "-S", "-c", "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"]
    proc = await asyncio.create_subprocess_exec(
        *argv, user=uid, group=uid, extra_groups=[], stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    await proc.wait()
