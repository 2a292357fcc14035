"""Stateful sessions: one warm sandboxed worker per session, plus a pool of pre-started workers.

A session lives in its own sandbox (own scratch directory, own uid on a root service) with a
`worker.py` process that keeps the environments' state between calls. Calls to one session run
one at a time. Sessions end on `DELETE`, after `idle_s` without calls, after `lifetime_s` in all,
or when a call ignores its timeout (then the worker is killed and the session is gone).

Pre-started workers (`warm_workers`) make session creation and stateless tool calls cheap: the
interpreter, site-packages and the BFCL modules are already loaded when a request arrives.

Memory held by idle sessions is capped host-wide (`idle_memory_bytes`): after each call the
session's footprint is measured (private memory of its process tree plus its scratch), and while
idle sessions hold more than the cap together, the least recently used one is ended.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tools_sandbox.backends import Launch
from tools_sandbox.executor import Executor
from tools_sandbox.limits import Limits
from tools_sandbox.tools.registry import SERVICE_TOOLS, EnvSpec, ToolRegistry
from tools_sandbox.worker_process import WorkerProcess, footprint

log = logging.getLogger(__name__)
_GRACE_S = 2.0  # beyond a call's wall limit, for the worker's own timeout to answer first
_SETUP_TIMEOUT_S = 60.0  # worker start and environment import


class SessionNotFound(KeyError):
    """No live session with that id (never created, closed, reaped, or killed after a timeout)."""


class SessionLimit(RuntimeError):
    """Too many live sessions."""


@dataclass
class ToolOutcome:
    """What one tool call produced."""

    ok: bool
    output: str
    error: str | None = None
    truncated: bool = False
    timed_out: bool = False
    duration_s: float = 0.0


def _in_service(tool: str, arguments: dict) -> ToolOutcome:
    """A `SERVICE_TOOLS` tool (the calculator's bounded parser, a lookup), run here rather than in a
    sandbox."""
    start = time.perf_counter()
    ok, output, error = SERVICE_TOOLS[tool](arguments)
    return ToolOutcome(ok, output, error, duration_s=time.perf_counter() - start)


@dataclass
class Session:
    """A live session: its environments, worker and clocks."""

    id: str
    envs: list[EnvSpec]
    worker: WorkerProcess | None
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    held_bytes: int = 0
    """Memory and scratch the session held after its last call."""

    @property
    def tools(self) -> list[str]:
        """All tool names of this session."""
        return [t for env in self.envs for t in env.tool_names]


class SessionManager:
    """Creates, serves, reaps and closes sessions; also runs stateless tool calls."""

    def __init__(
        self,
        executor: Executor,
        registry: ToolRegistry,
        limits: Limits,
        *,
        max_sessions: int = 256,
        idle_s: float = 300.0,
        lifetime_s: float = 3600.0,
        session_cpu_s: int = 600,
        warm_workers: int = 2,
        preload: tuple[str, ...] = (),
        idle_memory_bytes: int = 4 << 30,
    ) -> None:
        self.executor, self.registry, self.limits = executor, registry, limits
        self.max_sessions, self.idle_s, self.lifetime_s = max_sessions, idle_s, lifetime_s
        self.session_cpu_s, self.warm_workers, self.preload = session_cpu_s, warm_workers, list(preload)
        self.idle_memory_bytes = idle_memory_bytes
        self.sessions: dict[str, Session] = {}
        self._pool: asyncio.Queue[WorkerProcess] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._filling = 0
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the reaper and fill the warm pool."""
        self._spawn_task(self._reap_loop())
        self._refill()

    async def stop(self) -> None:
        """Kill every session and pooled worker."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for session_id in list(self.sessions):
            await self.close(session_id)
        while not self._pool.empty():
            await self._discard(self._pool.get_nowait())

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- workers -----------------------------------------------------------------------------------
    def _readonly_paths(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        envs = self.registry.envs.values()
        return (tuple(p for e in envs for p in e.readonly_paths), tuple(p for e in envs for p in e.sys_path))

    async def _spawn_worker(self, extra_path: str | None = None) -> WorkerProcess:
        uid = self.executor.acquire_uid()
        try:
            scratch = self.executor.new_scratch(uid)
        except BaseException:
            await self.executor.release(uid, None)
            raise
        readonly, sys_path = self._readonly_paths()
        if extra_path:
            readonly, sys_path = (*readonly, extra_path), (*sys_path, extra_path)
        launch = Launch(
            scratch=scratch,
            limits=self.limits,
            uid=uid,
            cpu_hard_s=self.session_cpu_s,
            run={"mode": "worker", "preload": self.preload},
            readonly_paths=readonly,
            sys_path=sys_path,
        )
        try:
            # Replies carry up to output_bytes of text, JSON-escaped (up to 6 bytes per byte).
            proc = await self.executor.spawn(launch, line_limit=6 * self.limits.output_bytes + (1 << 16))
        except BaseException:
            await self.executor.release(uid, scratch)
            raise
        return WorkerProcess(proc, uid, scratch)

    async def _discard(self, worker: WorkerProcess) -> None:
        await worker.kill()
        await self.executor.release(worker.uid, worker.scratch)

    def _refill(self) -> None:
        missing = self.warm_workers - self._pool.qsize() - self._filling
        for _ in range(max(0, missing)):
            self._filling += 1
            self._spawn_task(self._fill_one())

    async def _fill_one(self) -> None:
        try:
            worker = await self._spawn_worker()
            if self._stopping:
                await self._discard(worker)
            else:
                self._pool.put_nowait(worker)
        except Exception:  # noqa: BLE001 - a failed pre-start must not kill the service
            log.exception("could not pre-start a sandbox worker")
        finally:
            self._filling -= 1

    async def _take_worker(self, envs: list[EnvSpec], config: dict) -> WorkerProcess:
        worker = None
        while not self._pool.empty():
            candidate = self._pool.get_nowait()
            if candidate.proc.returncode is None:
                worker = candidate
                break
            await self._discard(candidate)
        self._refill()
        worker = worker or await self._spawn_worker()
        specs = [env.worker_spec(config.get(env.name)) for env in envs]
        try:
            reply = await worker.request({"op": "init", "envs": specs}, _SETUP_TIMEOUT_S)
        except BaseException:
            await self._discard(worker)
            raise
        if not reply.get("ok"):
            await self._discard(worker)
            raise ValueError(f"could not set up the environments: {reply.get('error')}")
        return worker

    # -- sessions ----------------------------------------------------------------------------------
    async def create(self, names: list[str], config: dict | None = None) -> Session:
        """Create a session with the environments named (environment or tool names).

        Raises:
            KeyError: an unknown name. SessionLimit: too many sessions. ValueError: setup failed.
        """
        envs = self.registry.resolve(names)
        if len(self.sessions) >= self.max_sessions:
            raise SessionLimit(
                f"{len(self.sessions)} sessions are live (the limit is {self.max_sessions}); "
                "close sessions you no longer need, or raise --max-sessions"
            )
        sandboxed = [env for env in envs if not env.in_service]
        worker = await self._take_worker(sandboxed, config or {}) if sandboxed else None
        session = Session(id=secrets.token_hex(16), envs=envs, worker=worker)
        self.sessions[session.id] = session
        await self._account(session)
        return session

    def get(self, session_id: str) -> Session:
        """The live session `session_id`; SessionNotFound otherwise."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                f"no live session {session_id!r}: it was closed, reaped after "
                f"{self.idle_s:g} s idle or {self.lifetime_s:g} s in all, or ended by a "
                "timeout; create a new session"
            )
        return session

    async def call(
        self, session_id: str, tool: str, arguments: dict, wall_s: float | None = None
    ) -> ToolOutcome:
        """Run `tool` in a session. Raises SessionNotFound, or KeyError for a tool not in it."""
        session = self.get(session_id)
        if tool not in session.tools:
            raise KeyError(
                f"tool {tool!r} is not in session {session_id}; its tools: {', '.join(session.tools)}"
            )
        async with session.lock:
            if session_id not in self.sessions:
                raise SessionNotFound(
                    f"session {session_id!r} ended while this call waited; create a new one"
                )
            outcome = await self._call_in(session, tool, arguments, wall_s)
            session.last_used = time.monotonic()
        await self._account(session)
        return outcome

    def idle_memory(self) -> int:
        """Bytes held by sessions with no call in progress, as last measured."""
        return sum(s.held_bytes for s in self.sessions.values() if not s.lock.locked())

    async def _account(self, session: Session) -> None:
        """Measure `session`, then end least recently used idle sessions while over the cap."""
        if session.worker is not None and session.id in self.sessions:
            # a few /proc reads: cheaper inline than a hop to a thread
            session.held_bytes = footprint(session.worker.proc.pid, session.worker.scratch)
        while self.idle_memory() > self.idle_memory_bytes:
            oldest = min(
                (s for s in self.sessions.values() if not s.lock.locked()), key=lambda s: s.last_used
            )
            log.info(
                "ending session %s: idle sessions hold %d MiB, over the --idle-sessions-mb cap",
                oldest.id,
                self.idle_memory() >> 20,
            )
            await self.close(oldest.id)

    async def _call_in(
        self, session: Session, tool: str, arguments: dict, wall_s: float | None
    ) -> ToolOutcome:
        if self.registry.env_of(tool).in_service:
            return _in_service(tool, arguments)
        outcome, broken = await self._worker_call(session.worker, tool, arguments, wall_s)
        if broken:
            await self.close(session.id)
            outcome.error = f"{outcome.error}; the session was ended, create a new one"
        return outcome

    async def call_stateless(
        self, tool: str, arguments: dict, config: Any = None, wall_s: float | None = None
    ) -> ToolOutcome:
        """Run one call in a fresh environment that is thrown away afterwards."""
        env = self.registry.env_of(tool)
        if env.in_service:
            return _in_service(tool, arguments)
        worker = await self._take_worker([env], {env.name: config} if config is not None else {})
        try:
            outcome, _ = await self._worker_call(worker, tool, arguments, wall_s)
            return outcome
        finally:
            await self._discard(worker)

    async def _worker_call(
        self, worker: WorkerProcess, tool: str, arguments: dict, wall_s: float | None
    ) -> tuple[ToolOutcome, bool]:
        """One call on a worker: (outcome, True if the worker must be discarded)."""
        start = time.perf_counter()
        wall = min(wall_s or self.limits.wall_s, self.limits.wall_s)
        message = {
            "op": "call",
            "tool": tool,
            "arguments": arguments,
            "wall_s": wall,
            "cpu_s": self.limits.cpu_s,
            "output_bytes": self.limits.output_bytes,
        }
        try:
            reply = await worker.request(message, wall + _GRACE_S)
        except (asyncio.TimeoutError, RuntimeError) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            reason = (
                f"timeout: the call ran past {wall:g} s and ignored the interrupt"
                if timed_out
                else f"the sandbox failed: {exc}"
            )
            return ToolOutcome(
                False, "", reason, timed_out=timed_out, duration_s=time.perf_counter() - start
            ), True
        error = reply.get("error")
        return ToolOutcome(
            bool(reply.get("ok")),
            str(reply.get("output") or ""),
            error,
            truncated=bool(reply.get("truncated")),
            timed_out=bool(error and str(error).startswith("timeout")),
            duration_s=time.perf_counter() - start,
        ), False

    async def describe_module(self, module: str, search_dir: str) -> dict:
        """Import a user tool module in a sandbox that sees `search_dir`; return `{"name", "tools"}`."""
        worker = await self._spawn_worker(search_dir)
        try:
            reply = await worker.request({"op": "describe", "module": module}, _SETUP_TIMEOUT_S)
        finally:
            await self._discard(worker)
        if not reply.get("ok"):
            raise ValueError(
                f"tool module {module!r} could not be loaded in the sandbox: {reply.get('error')}"
            )
        return reply

    async def close(self, session_id: str) -> bool:
        """End a session and free its sandbox; False if it did not exist."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if session.worker is not None:
            await self._discard(session.worker)
        return True

    async def _reap_loop(self) -> None:
        period = max(0.2, min(self.idle_s, self.lifetime_s) / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                expired = now - session.created > self.lifetime_s
                idle = now - session.last_used > self.idle_s and not session.lock.locked()
                dead = session.worker is not None and session.worker.proc.returncode is not None
                if expired or idle or dead:
                    log.info(
                        "reaping session %s (%s)",
                        session.id,
                        "lifetime" if expired else "idle" if idle else "worker exited",
                    )
                    await self.close(session.id)
