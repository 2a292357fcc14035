"""The HTTP service (FastAPI): SandboxFusion-compatible `/run_code`, tool calls, stateful sessions.

    GET    /health                   liveness, backend, load (no secret needed)
    GET    /metrics                  counters and latency percentiles
    GET    /tools                    every tool's schema, for the prompt
    POST   /run_code                 SandboxFusion RunCodeRequest -> RunCodeResponse (python, bash)
    POST   /call                     a stateless tool call in a fresh environment
    POST   /sessions                 create a session -> {"session_id", "tools", ...}
    POST   /sessions/{id}/call       a tool call that sees the session's state
    DELETE /sessions/{id}            end a session

Every execution passes the admission gate (429 + Retry-After when the queue is full; slots are
shared fairly between client addresses). With a shared secret configured, every endpoint but
/health wants `Authorization: Bearer <secret>`, checked before the body is read. There are no
API docs pages (`/docs`, `/openapi.json`): the README documents the API.
Errors are JSON `{"error": "<what is wrong and how to fix it>"}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tools_sandbox.api_models import (
    LANGUAGES,
    CommandRunResult,
    CreateSessionRequest,
    CreateSessionResponse,
    RunCodeRequest,
    RunCodeResponse,
    ToolCallRequest,
    ToolCallResponse,
)
from tools_sandbox.backends import Backend, select_backend
from tools_sandbox.backends.uids import DEFAULT_UID_BASE, UidPool
from tools_sandbox.executor import Executor
from tools_sandbox.limits import Limits
from tools_sandbox.metrics import Admission, Metrics, Overloaded
from tools_sandbox.middleware import BodyGuard, SecretGate
from tools_sandbox.sessions import SessionLimit, SessionManager, SessionNotFound, ToolOutcome
from tools_sandbox.tools import bfcl, user
from tools_sandbox.tools.registry import EnvSpec, builtin_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Everything the service needs; `server.main` builds it from the command line."""

    limits: Limits = field(default_factory=Limits)
    backend: str = "auto"
    max_concurrency: int = max(1, os.cpu_count() or 1)
    queue_size: int = 256
    max_sessions: int = 256
    session_idle_s: float = 300.0
    session_lifetime_s: float = 3600.0
    session_cpu_s: int = 600
    warm_workers: int = 2
    prestart: int = 2
    secret: str | None = None
    max_body_bytes: int = 16 << 20
    read_timeout_s: float = 10.0
    max_connections_per_client: int = 64
    idle_sessions_mb: int = 4096
    tool_modules: tuple[str, ...] = ()
    bfcl: bool = True
    scratch_root: str | None = None
    uid_base: int = DEFAULT_UID_BASE
    sandbox_python: str | None = None
    seccomp: bool = True


class _State:
    """The live parts, built in the lifespan."""

    def __init__(self, config: ServiceConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend or select_backend(
            config.backend, seccomp=config.seccomp, python=config.sandbox_python
        )
        # One uid per running call, live session and pooled worker, plus slack for sweeps in flight.
        pool_size = (
            2 * config.max_concurrency + config.max_sessions + config.warm_workers + config.prestart + 64
        )
        uid_pool = UidPool(config.uid_base, pool_size) if os.geteuid() == 0 else None
        scratch = Path(config.scratch_root) if config.scratch_root else None
        self.executor = Executor(
            self.backend,
            scratch_root=scratch,
            uid_pool=uid_pool,
            limits=config.limits,
            prestart=config.prestart,
        )
        self.uid_pool = uid_pool
        self.registry = builtin_registry(bfcl=config.bfcl)
        self.manager = SessionManager(
            self.executor,
            self.registry,
            config.limits,
            max_sessions=config.max_sessions,
            idle_s=config.session_idle_s,
            lifetime_s=config.session_lifetime_s,
            session_cpu_s=config.session_cpu_s,
            warm_workers=config.warm_workers,
            preload=tuple(bfcl.preload_modules()) if config.bfcl else (),
            idle_memory_bytes=config.idle_sessions_mb << 20,
        )
        self.admission = Admission(config.max_concurrency, config.queue_size)
        self.metrics = Metrics()

    async def load_user_modules(self) -> None:
        for spec in self.config.tool_modules:
            found = user.locate(spec)
            reply = await self.manager.describe_module(found.module, found.search_dir)
            self.registry.register(
                EnvSpec(
                    reply["name"],
                    "module",
                    tuple(reply["tools"]),
                    module=found.module,
                    readonly_paths=(found.search_dir,),
                    sys_path=(found.search_dir,),
                )
            )
            log.info(
                "loaded tool module %s as environment %r: %s",
                spec,
                reply["name"],
                ", ".join(t["name"] for t in reply["tools"]),
            )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(
                f"the body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))}); "
                "send a JSON object with Content-Type: application/json"
            )
        else:
            parts.append(f"{where}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


async def _parse_in_thread(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        return await asyncio.to_thread(model.model_validate_json, raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _decode_files(encoded: dict[str, str | None]) -> dict[str, bytes]:
    files = {}
    for name, content in encoded.items():
        try:
            files[name] = base64.b64decode(content or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                f"files[{name!r}] is not valid base64 ({exc}); encode file contents with base64"
            ) from exc
    return files


def _outcome(o: ToolOutcome) -> ToolCallResponse:
    return ToolCallResponse(
        ok=o.ok,
        output=o.output,
        error=o.error,
        truncated=o.truncated,
        timed_out=o.timed_out,
        duration_s=o.duration_s,
    )


def create_app(config: ServiceConfig, backend: Backend | None = None) -> FastAPI:
    """Build the FastAPI app; the sandbox machinery starts in the app's lifespan.

    Args:
        config: the service settings.
        backend: an already selected backend (default: select `config.backend` at start-up).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _State(config, backend)
        app.state.sandbox = state
        try:
            # User modules first: the warm pool's workers must already see their directories.
            await state.load_user_modules()
            await state.manager.start()
            state.executor.start()
            log.info(
                "sandbox service ready: backend=%s, max_concurrency=%d, queue=%d, tools=%d",
                state.backend.name,
                config.max_concurrency,
                config.queue_size,
                len(state.registry.tool_env),
            )
            yield
        finally:
            await state.manager.stop()
            await state.executor.stop()
            await asyncio.to_thread(state.executor.scratch.remove_all)

    app = FastAPI(
        title="rest-megatron tools_sandbox",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodyGuard, max_bytes=config.max_body_bytes, timeout_s=config.read_timeout_s)
    app.add_middleware(SecretGate, secret=config.secret)  # outermost: before any byte of the body

    def sandbox(request: Request) -> _State:
        return request.app.state.sandbox

    def client_of(request: Request) -> str:
        return request.client.host if request.client else ""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Overloaded)
    async def _busy(request: Request, exc: Overloaded) -> JSONResponse:
        sandbox(request).metrics.reject()
        return _error(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(SessionLimit)
    async def _too_many(request: Request, exc: SessionLimit) -> JSONResponse:
        sandbox(request).metrics.reject()
        return _error(429, str(exc), {"Retry-After": "5"})

    @app.exception_handler(KeyError)
    async def _not_found(request: Request, exc: KeyError) -> JSONResponse:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(ValueError)
    async def _bad(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc))

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        s = sandbox(request)
        problem = s.executor.start_error
        if problem is None and s.uid_pool is not None and s.uid_pool.free == 0:
            problem = "every sandbox uid is in use"
        body = {
            "status": "ok" if problem is None else "unavailable",
            "can_start": problem is None,
            "problem": problem,
            "backend": s.backend.name,
            "weak_isolation": s.backend.weak,
            "scratch_capped": s.executor.scratch.capped,
            "sessions": len(s.manager.sessions),
            "idle_session_mb": round(s.manager.idle_memory() / (1 << 20), 1),
            "running": s.admission.running,
            "queued": s.admission.waiting,
        }
        return JSONResponse(body, status_code=200 if problem is None else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> dict:
        s = sandbox(request)
        return {
            **s.metrics.snapshot(),
            "running": s.admission.running,
            "queue_depth": s.admission.waiting,
            "sessions": len(s.manager.sessions),
            "backend": s.backend.name,
        }

    @app.get("/tools")
    async def tools(request: Request) -> dict:
        return {"tools": sandbox(request).registry.schemas()}

    @app.post("/run_code")
    async def run_code(request: Request) -> Response:
        s = sandbox(request)
        # Parsed and answered in a thread: a body of many files (up to --max-body-mb) must not hold
        # up /health and the other clients on the event loop.
        body = await _parse_in_thread(request, RunCodeRequest)
        if body.language not in LANGUAGES:
            raise ValueError(
                f"language {body.language!r} is not supported here; use one of {', '.join(LANGUAGES)}"
            )
        files = await asyncio.to_thread(_decode_files, body.files) if body.files else {}
        start = time.perf_counter()
        main = "__main__.py" if body.language == "python" else "__main__.sh"
        files[main] = body.code.encode()
        run = (
            {"mode": "python", "path": main}
            if body.language == "python"
            else {"mode": "exec", "argv": ["/bin/bash", main]}
        )
        limits = s.config.limits.narrowed(wall_s=body.run_timeout, memory_mb=body.memory_limit_MB)
        async with s.admission.slot(client_of(request)):
            result = await s.executor.run(
                run,
                limits,
                files=files,
                stdin=(body.stdin or "").encode() or None,
                fetch_files=body.fetch_files,
            )
        sandbox_error = result.status == "SandboxError"
        success = result.status == "Finished" and result.return_code == 0
        s.metrics.record(
            "run_code",
            time.perf_counter() - start,
            ok=success,
            timed_out=result.status == "TimeLimitExceeded",
            sandbox_error=sandbox_error,
            truncated=result.truncated,
        )
        run_result = CommandRunResult(
            status="Error" if sandbox_error else result.status,
            execution_time=result.duration_s,
            return_code=result.return_code,
            stdout=result.stdout,
            stderr=result.stderr,
        )

        def answer() -> bytes:
            return (
                RunCodeResponse(
                    status="SandboxError" if sandbox_error else "Success" if success else "Failed",
                    message=result.stderr.strip() if sandbox_error else "",
                    run_result=run_result,
                    files={k: base64.b64encode(v).decode() for k, v in (result.files or {}).items()},
                )
                .model_dump_json()
                .encode()
            )

        return Response(await asyncio.to_thread(answer), media_type="application/json")

    @app.post("/call", response_model=ToolCallResponse)
    async def call(body: ToolCallRequest, request: Request) -> ToolCallResponse:
        s, start = sandbox(request), time.perf_counter()
        async with s.admission.slot(client_of(request)):
            outcome = await s.manager.call_stateless(body.tool, body.arguments, body.config, body.timeout_s)
        s.metrics.record(
            "call",
            time.perf_counter() - start,
            ok=outcome.ok,
            timed_out=outcome.timed_out,
            truncated=outcome.truncated,
        )
        return _outcome(outcome)

    @app.post("/sessions", response_model=CreateSessionResponse)
    async def create_session(body: CreateSessionRequest, request: Request) -> CreateSessionResponse:
        s, start = sandbox(request), time.perf_counter()
        async with s.admission.slot(client_of(request)):
            session = await s.manager.create(body.tools, body.config)
        s.metrics.record("create_session", time.perf_counter() - start, ok=True)
        return CreateSessionResponse(
            session_id=session.id,
            tools=s.registry.schemas(e.name for e in session.envs),
            idle_timeout_s=s.manager.idle_s,
            max_lifetime_s=s.manager.lifetime_s,
        )

    @app.post("/sessions/{session_id}/call", response_model=ToolCallResponse)
    async def session_call(session_id: str, body: ToolCallRequest, request: Request) -> ToolCallResponse:
        s = sandbox(request)
        if body.config is not None:
            raise ValueError("'config' belongs in POST /sessions, not in a session call; remove it")
        s.manager.get(session_id)  # 404 before queueing
        start = time.perf_counter()
        async with s.admission.slot(client_of(request)):
            outcome = await s.manager.call(session_id, body.tool, body.arguments, body.timeout_s)
        s.metrics.record(
            "session_call",
            time.perf_counter() - start,
            ok=outcome.ok,
            timed_out=outcome.timed_out,
            truncated=outcome.truncated,
        )
        return _outcome(outcome)

    @app.delete("/sessions/{session_id}")
    async def close_session(session_id: str, request: Request) -> dict:
        if not await sandbox(request).manager.close(session_id):
            raise SessionNotFound(f"no live session {session_id!r}; it may have been reaped already")
        return {"closed": session_id}

    return app
