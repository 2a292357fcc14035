"""Start sandbox processes, capture their output under a cap, and kill the whole tree at the end.

Every sandbox process is started in a new session (its own process group). At the end of a call,
whether it finished or hit the wall-clock limit, the service sends SIGKILL to that group: with
bubblewrap that takes the pid namespace down with it; in the fallback, seccomp has kept every
descendant in the group. A root service then also runs `kill -1` as the call's uid (`UidPool`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools_sandbox.backends import Backend, Launch
from tools_sandbox.backends.uids import UidPool, sweep_uid
from tools_sandbox.limits import Limits, truncation_marker
from tools_sandbox.scratch import FileLimits, ScratchSpace, check_files, write_files
from tools_sandbox.scratch import fetch_files as fetch_files_from

log = logging.getLogger(__name__)
SETUP_FAILED = 125  # the launcher's exit status when the sandbox could not be set up
_READ_CHUNK = 1 << 16
_DRAIN_AFTER_EXIT_S = 2.0


@dataclass
class ExecResult:
    """The outcome of one sandboxed command, in SandboxFusion's terms."""

    status: str
    """"Finished", "TimeLimitExceeded", or "SandboxError" (the sandbox itself failed)."""
    return_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False
    files: dict[str, bytes] | None = None


class _Capture:
    """Bytes kept from one stream, up to a cap; the rest is counted and dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        out = self.kept.decode("utf-8", errors="replace")
        return out + truncation_marker(self.dropped, self.cap) if self.dropped else out


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """A `preexec_fn` for services started by a parent process: the kernel sends `sig` when the parent
    dies, SIGKILL and the OOM killer included, so a service never outlives what started it (Linux;
    elsewhere a no-op). The parent must start it from a thread that lives as long as it needs it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG


def kill_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of `proc` (it leads its own session); missing is fine."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Sandbox:
    """A started sandbox process with its uid and scratch directory."""

    proc: asyncio.subprocess.Process
    uid: int | None
    scratch: Path


class Executor:
    """Runs launches for one backend; owns the scratch root, the uid pool and pre-started sandboxes.

    One-shot calls take a pre-started sandbox: already confined, interpreter loaded, waiting on
    stdin for its order (the launcher's `deferred` mode). A sandbox is used for one call only.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        scratch_root: Path | None = None,
        uid_pool: UidPool | None = None,
        limits: Limits | None = None,
        prestart: int = 2,
        file_limits: FileLimits | None = None,
    ) -> None:
        self.backend = backend
        self.uid_pool = uid_pool
        self.limits = limits or Limits()
        self.prestart = prestart
        # Always a new directory of our own (inside `scratch_root` if given): it is removed at shutdown.
        if scratch_root is not None:
            Path(scratch_root).mkdir(parents=True, exist_ok=True)
        self.scratch_root = Path(tempfile.mkdtemp(prefix="rest-sandbox-", dir=scratch_root))
        os.chmod(self.scratch_root, 0o711)  # pool uids may traverse, not list
        self.scratch = ScratchSpace(self.scratch_root)
        self.file_limits = file_limits or FileLimits()
        self.start_error: str | None = None  # why the last sandbox start failed; None once one succeeds
        # Without a pid namespace, leftovers of a uid are found only by a `kill -1` as that uid.
        self.sweep_uids = backend.weak
        # Pre-started sandboxes, or the exception a failed pre-start raised (handed to a waiting call).
        self._ready: asyncio.Queue[Sandbox | BaseException] = asyncio.Queue()
        self._filling = 0
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin pre-starting sandboxes."""
        self._refill()

    async def stop(self) -> None:
        """Kill pre-started sandboxes and wait for pending clean-ups."""
        self._stopping = True
        while not self._ready.empty():
            sandbox = self._ready.get_nowait()
            if isinstance(sandbox, Sandbox):
                await self.teardown(sandbox.proc, sandbox.uid, sandbox.scratch)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- scratch directories and uids --------------------------------------------------------------
    def new_scratch(self, uid: int | None) -> Path:
        """A fresh private scratch directory of at most `limits.scratch_mb`, owned by `uid` when there
        is one."""
        path = Path(tempfile.mkdtemp(prefix="call-", dir=self.scratch_root))
        try:
            self.scratch.prepare(path, uid if self.uid_pool is not None else None, self.limits.scratch_mb)
        except OSError:
            os.rmdir(path)
            raise
        return path

    def acquire_uid(self) -> int | None:
        """A pool uid for a new call or session, or None for a non-root service."""
        return self.uid_pool.acquire() if self.uid_pool is not None else None

    async def release(self, uid: int | None, scratch: Path | None, *, swept: bool = False) -> None:
        """Return the uid (after a sweep, in the fallback) and delete the scratch directory."""
        if uid is not None and self.uid_pool is not None:
            await self.uid_pool.release(uid, sweep=self.sweep_uids and not swept)
        if scratch is not None:
            await asyncio.to_thread(self.scratch.remove, scratch)

    async def teardown(self, proc: asyncio.subprocess.Process, uid: int | None, scratch: Path) -> None:
        """The one way a sandbox ends, on success or any error: kill its tree, close its pipes, sweep
        its uid (before the call answers: nothing of it may outlive it), then free uid and scratch."""
        kill_tree(proc)
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
        if self.sweep_uids and uid is not None:
            await sweep_uid(uid)
        # Off the critical path: returning the uid and removing the scratch.
        self._background(self.release(uid, scratch, swept=True))

    # -- starting processes ------------------------------------------------------------------------
    async def spawn(self, launch: Launch, *, line_limit: int = _READ_CHUNK) -> asyncio.subprocess.Process:
        """Start `launch` under the backend in a new session, with piped stdin/stdout/stderr.

        `line_limit` bounds one `readline()` on stdout (session workers answer in JSON lines).
        """
        read_fd = None
        if getattr(self.backend, "wants_seccomp_fd", False) and getattr(self.backend, "seccomp", False):
            read_fd, write_fd = os.pipe()
            os.write(write_fd, _seccomp_program())  # a few hundred bytes: fits the pipe buffer
            os.close(write_fd)
        try:
            argv, env = self.backend.command(launch, seccomp_fd=read_fd)
            return await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(launch.scratch),
                start_new_session=True,
                pass_fds=(read_fd,) if read_fd else (),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=line_limit,
            )
        finally:
            if read_fd is not None:
                os.close(read_fd)

    async def _start_deferred(self) -> Sandbox:
        uid = self.acquire_uid()
        try:
            scratch = self.new_scratch(uid)
        except BaseException:
            await self.release(uid, None)
            raise
        try:
            proc = await self.spawn(
                Launch(scratch=scratch, limits=self.limits, run={"mode": "deferred"}, uid=uid)
            )
        except BaseException:
            await self.release(uid, scratch)
            raise
        return Sandbox(proc, uid, scratch)

    def _refill(self) -> None:
        for _ in range(max(0, self.prestart - self._ready.qsize() - self._filling)):
            self._filling += 1
            self._background(self._fill_one())

    async def _fill_one(self) -> None:
        try:
            sandbox = await self._start_deferred()
        except Exception as exc:  # noqa: BLE001 - hand the failure to the call waiting for this sandbox
            log.exception("could not pre-start a sandbox")
            self.start_error = f"{type(exc).__name__}: {exc}"
            self._ready.put_nowait(exc)
            return
        finally:
            self._filling -= 1
        self.start_error = None
        if self._stopping:
            await self.teardown(sandbox.proc, sandbox.uid, sandbox.scratch)
        else:
            self._ready.put_nowait(sandbox)

    async def _take(self) -> Sandbox:
        """The next pre-started sandbox. A call never starts its own while pre-starts are under way:
        that would only add a competitor for the same CPUs."""
        if self.prestart < 1:
            return await self._start_deferred()
        for attempt in range(3):
            self._refill()
            sandbox = await self._ready.get()
            self._refill()
            if isinstance(sandbox, BaseException):
                raise RuntimeError(f"the sandbox could not be started: {sandbox}") from sandbox
            if sandbox.proc.returncode is None or attempt == 2:
                return sandbox  # one that died at start-up three times running is reported as a SandboxError
            await self.teardown(sandbox.proc, sandbox.uid, sandbox.scratch)
        raise AssertionError("unreachable")

    # -- one-shot calls ----------------------------------------------------------------------------
    async def run(
        self,
        run: dict,
        limits: Limits,
        *,
        files: dict[str, bytes] | None = None,
        stdin: bytes | None = None,
        fetch_files: list[str] | None = None,
    ) -> ExecResult:
        """Run one command to completion in a fresh sandbox.

        Args:
            run: what to run, e.g. `{"mode": "python", "path": "main.py"}` or
                `{"mode": "exec", "argv": [...]}`.
            limits: caps for this call (CPU and memory may be lower than the server's; wall is enforced here).
            files: files to create in the scratch directory first (relative names).
            stdin: bytes fed to the process's stdin.
            fetch_files: scratch files to return afterwards (regular files only, never via symlinks).
        """
        # Every check before any work: a bad request must not cost a sandbox.
        names = list(files or {})
        checked = check_files(names, list(fetch_files or []), self.file_limits)
        contents = list(zip(checked, (files or {}).values()))
        sandbox = await self._take()
        try:
            try:
                await asyncio.to_thread(write_files, sandbox.scratch, contents, sandbox.uid)
            except OSError as exc:  # e.g. the scratch budget is too small for the files
                raise ValueError(
                    f"cannot create the request's files ({exc.strerror}); send smaller files "
                    "or raise the server's --scratch-mb"
                ) from exc
            if sandbox.proc.returncode is not None:
                _, stderr = await sandbox.proc.communicate()
                return ExecResult(
                    status="SandboxError",
                    return_code=sandbox.proc.returncode,
                    stdout="",
                    stderr=stderr.decode(errors="replace")[-4000:] or "the sandbox exited at start-up",
                    duration_s=0.0,
                )
            rlimits = limits.rlimits()
            order = (
                json.dumps({**run, "rlimits": {"cpu": rlimits["cpu"], "as": rlimits["as"]}}).encode() + b"\n"
            )
            result = await self._communicate(sandbox.proc, order + (stdin or b""), limits)
            if fetch_files:
                result.files = await asyncio.to_thread(
                    fetch_files_from,
                    sandbox.scratch,
                    fetch_files,
                    self.file_limits.fetch_bytes,
                    limits.file_size_mb << 20,
                )
            return result
        finally:
            await self.teardown(sandbox.proc, sandbox.uid, sandbox.scratch)

    async def _communicate(
        self, proc: asyncio.subprocess.Process, stdin: bytes, limits: Limits
    ) -> ExecResult:
        start = time.perf_counter()
        out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
        readers = asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
        feeder = asyncio.create_task(_feed(proc, stdin))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout=limits.wall_s)
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            # Finished or not, nothing the call started may outlive it.
            kill_tree(proc)
            await proc.wait()
        duration = time.perf_counter() - start
        try:
            await asyncio.wait_for(readers, timeout=_DRAIN_AFTER_EXIT_S)
        except asyncio.TimeoutError:
            readers.cancel()
        feeder.cancel()
        return _result(proc.returncode, timed_out, out, err, duration)


@functools.lru_cache(maxsize=1)
def _seccomp_program() -> bytes:
    from tools_sandbox.confine import seccomp

    return seccomp.build_filter()


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    try:
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass


def _result(rc: int | None, timed_out: bool, out: _Capture, err: _Capture, duration: float) -> ExecResult:
    stderr_text = err.text()
    if timed_out:
        status = "TimeLimitExceeded"
    elif rc is not None and rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = "TimeLimitExceeded"  # the CPU-seconds cap
    elif rc == SETUP_FAILED and "sandbox setup failed" in stderr_text:
        status = "SandboxError"
    else:
        status = "Finished"
    return ExecResult(
        status=status,
        return_code=rc,
        stdout=out.text(),
        stderr=stderr_text,
        duration_s=duration,
        truncated=bool(out.dropped or err.dropped),
    )
