"""A pool of unprivileged uids, one per running call or live session (root services only).

Why a uid per call rather than one shared `nobody`: RLIMIT_NPROC counts processes per uid, so a
shared uid would make the process cap shared by every concurrent call (64 concurrent calls at a
cap of 64 would starve each other), and `kill -1` by one call would reach the others. With its own
uid, a call can only signal its own processes, and after the call `kill -1` *as that uid* removes
anything left, in any namespace, before the uid is reused.

The uids (default 1,900,000,000 upwards) have no /etc/passwd entry; nothing else on the machine
may use that range. Change it with `--uid-base` if it collides. Several services on one machine
(a trainer's and a test's, say) each claim their own block of 65,536 uids from the base upwards,
with an flock on a file per block held for the service's lifetime, so one service's sweep can
never kill another's sandboxes.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import sys
from pathlib import Path

DEFAULT_UID_BASE = 1_900_000_000
LOCK_DIR = (
    Path("/run/lock/rest-megatron-sandbox-uids")
    if os.path.isdir("/run/lock")
    else Path("/tmp/rest-megatron-sandbox-uids")
)
BLOCK = 65_536
_MAX_BLOCKS = 256
_KILL = shutil.which("kill") or "/bin/kill"
log = logging.getLogger(__name__)


def _claim_block(base: int) -> tuple[int, int]:
    """Lock the first free block of BLOCK uids at or above `base`; return (block start, lock fd)."""
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for index in range(_MAX_BLOCKS):
        start = base + index * BLOCK
        if start + BLOCK > 2**32 - 2:
            break
        fd = os.open(LOCK_DIR / f"{start}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return start, fd
    raise ValueError(
        f"no free block of {BLOCK} sandbox uids above {base} (other services hold them); "
        "pass another --uid-base"
    )


class UidPool:
    """Hand out uids `base .. base + size - 1`; `release` sweeps a uid's processes first."""

    def __init__(self, base: int = DEFAULT_UID_BASE, size: int = 256) -> None:
        if os.geteuid() != 0:
            raise ValueError("UidPool needs root; a non-root service runs calls under its own uid instead.")
        if not 1000 <= base <= 2**32 - 2 - BLOCK:
            raise ValueError(f"uid base {base} is out of range; pick one in [1000, {2**32 - 2 - BLOCK}].")
        if not 1 <= size <= BLOCK:
            raise ValueError(
                f"{size} uids asked for; one service may use 1 to {BLOCK} (lower --max-sessions)."
            )
        self.base, self._lock_fd = _claim_block(base)
        self.size = size
        self._free = list(range(self.base + size - 1, self.base - 1, -1))

    @property
    def free(self) -> int:
        """How many uids are available now."""
        return len(self._free)

    def acquire(self) -> int:
        """Take a uid; raises RuntimeError when all are in use (the caller's admission bound is wrong)."""
        if not self._free:
            raise RuntimeError(f"all {self.size} sandbox uids are in use")
        return self._free.pop()

    async def release(self, uid: int, sweep: bool = True) -> None:
        """Kill every process of `uid` (unless a pid namespace already did), then make it available again.

        Released uids go to the back of the queue, so a uid is reused as late as possible.
        """
        if sweep:
            await sweep_uid(uid)
        self._free.insert(0, uid)


def live_processes(uid: int) -> list[int]:
    """PIDs of the processes of `uid` that have not exited yet (zombies are dead already)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


async def sweep_uid(uid: int, deadline_s: float = 2.0) -> None:
    """SIGKILL every process of `uid` by running `kill -9 -1` as that uid, until none is left.

    kill(-1) as an unprivileged uid reaches exactly the processes it may signal: its own, in every
    pid namespace; the helper itself is spared by the kernel. Signals are asynchronous, so we look
    again (a fork racing the first kill is caught by the next round) until `/proc` has none.
    """
    argv = (
        [_KILL, "-9", "--", "-1"]
        if os.path.exists(_KILL)
        else [sys.executable, "-I", "-S", "-c", "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"]
    )
    loop = asyncio.get_running_loop()
    stop = loop.time() + deadline_s
    while True:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            user=uid,
            group=uid,
            extra_groups=[],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await proc.wait()
        await asyncio.sleep(0.005)
        left = await asyncio.to_thread(live_processes, uid)
        if not left:
            return
        if loop.time() > stop:
            log.warning("uid %d still has processes %s after %.1f s of SIGKILL", uid, left[:8], deadline_s)
            return
