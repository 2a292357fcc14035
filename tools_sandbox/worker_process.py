"""A sandboxed session worker seen from the service: its JSON-lines channel, and what it holds.

`WorkerProcess` wraps the started `worker.py` (see `tools_sandbox/worker.py` for the protocol);
`footprint` measures the memory and scratch a session holds, for the idle-sessions cap.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from pathlib import Path

from tools_sandbox.executor import kill_tree


class WorkerProcess:
    """A sandboxed `worker.py`, its uid and scratch directory; one JSON line per request."""

    def __init__(self, proc: asyncio.subprocess.Process, uid: int | None, scratch: Path) -> None:
        self.proc, self.uid, self.scratch = proc, uid, scratch
        self.stderr_tail: deque[bytes] = deque(maxlen=32)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        while chunk := await self.proc.stderr.read(4096):
            self.stderr_tail.append(chunk[-1024:])

    def diagnostics(self) -> str:
        """The end of what the worker wrote to stderr (for errors about a dead worker)."""
        return b"".join(self.stderr_tail).decode(errors="replace")[-1000:].strip()

    async def request(self, message: dict, timeout_s: float) -> dict:
        """Send one message and wait for its reply; raises TimeoutError, or RuntimeError if it died."""
        # The write shares the deadline: a large message blocks on a full pipe if the worker stalls.
        return await asyncio.wait_for(self._roundtrip(json.dumps(message).encode() + b"\n"), timeout_s)

    async def _roundtrip(self, data: bytes) -> dict:
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        except (BrokenPipeError, ConnectionResetError) as exc:
            line = b""
            self.stderr_tail.append(f"[{type(exc).__name__}]".encode())
        except ValueError as exc:  # a reply longer than the reader's limit: the worker is misbehaving
            raise RuntimeError(f"worker reply over the size limit ({exc})") from exc
        if not line:
            await asyncio.sleep(0.05)  # let the stderr drain catch the last words
            raise RuntimeError(f"the session's worker exited ({self.diagnostics() or 'no message'})")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise RuntimeError(f"the session's worker sent a malformed reply ({exc})") from exc

    async def kill(self) -> None:
        """Kill the worker's whole process tree."""
        kill_tree(self.proc)
        await self.proc.wait()
        self._stderr_task.cancel()


def footprint(pid: int, scratch: Path) -> int:
    """Private memory (RssAnon + RssShmem) of `pid` and its descendants, plus the bytes used in `scratch`."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/status", "rb") as f:
                for line in f:
                    if line.startswith((b"RssAnon:", b"RssShmem:")):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", "rb") as f:
                    stack += [int(p) for p in f.read().split()]
        except (OSError, ValueError):  # it just exited
            continue
    if os.path.ismount(scratch):
        usage = os.statvfs(scratch)
        total += (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    return total
