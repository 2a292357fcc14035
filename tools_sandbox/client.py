"""Client for the sandbox service, used by the rollout agent loop; and a local server launcher.

    async with SandboxClient("http://127.0.0.1:8080") as sandbox:
        tools = await sandbox.list_tools()                        # schemas for the prompt
        sid = await sandbox.create_session(["GorillaFileSystem"], config={"GorillaFileSystem": init})
        result = await sandbox.call_tool("ls", {}, session_id=sid)   # ToolResult(ok, output, error)
        await sandbox.close_session(sid)

Requests time out after `timeout_s`; 429 (honouring Retry-After, capped) and 5xx answers and
connection errors are retried up to `max_retries` times with jittered exponential backoff. A tool
that fails (bad arguments, an exception, a timeout) is not an HTTP error: it is a ToolResult with
`ok=False` and the reason in `error`, which the rollout shows to the model. HTTP 4xx answers other
than 429 raise `SandboxError` with the server's explanation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tools_sandbox.executor import die_with_parent

_MAX_RETRY_SLEEP_S = 10.0


class SandboxError(RuntimeError):
    """The service refused a request (4xx) or stayed unavailable through all retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ToolResult:
    """One tool call's result, as the rollout renders it into the tool turn."""

    ok: bool
    output: str
    error: str | None = None
    truncated: bool = False
    timed_out: bool = False
    duration_s: float = 0.0

    def render(self) -> str:
        """The text to show the model: the output, and the error if the call failed."""
        if self.ok:
            return self.output
        return f"{self.output}\nError: {self.error}" if self.output else f"Error: {self.error}"


def _headers(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def _backoff(attempt: int, response: httpx.Response | None) -> float:
    if response is not None and response.status_code == 429:
        try:
            return min(float(response.headers.get("retry-after", "1")), _MAX_RETRY_SLEEP_S) * random.uniform(
                0.5, 1.0
            )
        except ValueError:
            pass
    return min(0.05 * 2**attempt, _MAX_RETRY_SLEEP_S) * random.uniform(0.5, 1.5)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error") or body.get("detail") or body)
    except ValueError:
        return response.text[:500]


class SandboxClient:
    """Async client. Use as `async with`, or call `aclose()` when done."""

    def __init__(
        self,
        base_url: str,
        secret: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        max_connections: int = 256,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(secret),
            timeout=timeout_s,
            trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        last, last_status = "", None
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = await self._http.request(method, path, json=json)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response.json()
                last, last_status = (
                    f"HTTP {response.status_code}: {_error_text(response)}",
                    response.status_code,
                )
                if response.status_code != 429 and response.status_code < 500:
                    raise SandboxError(last, response.status_code)
            if attempt < self.max_retries:
                await asyncio.sleep(_backoff(attempt, response))
        raise SandboxError(
            f"{method} {path} failed after {self.max_retries + 1} attempts; last: {last}", last_status
        )

    async def health(self) -> dict:
        """GET /health."""
        return await self._request("GET", "/health")

    async def metrics(self) -> dict:
        """GET /metrics."""
        return await self._request("GET", "/metrics")

    async def list_tools(self) -> list[dict]:
        """Every tool's schema, as `{"type": "function", "function": {...}}` for the chat template."""
        return (await self._request("GET", "/tools"))["tools"]

    async def create_session(self, tools: list[str], config: dict | None = None) -> str:
        """Start a session with these environments or tools; returns its id."""
        body = await self._request("POST", "/sessions", {"tools": list(tools), "config": config or {}})
        return body["session_id"]

    async def close_session(self, session_id: str) -> None:
        """End a session (a session that is already gone is not an error)."""
        with contextlib.suppress(SandboxError):
            await self._request("DELETE", f"/sessions/{session_id}")

    async def call_tool(
        self,
        name: str,
        arguments: dict,
        session_id: str | None = None,
        timeout_s: float | None = None,
        config: Any = None,
    ) -> ToolResult:
        """Call a tool, in a session (its state persists) or stateless (a fresh environment)."""
        body: dict[str, Any] = {"tool": name, "arguments": arguments}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if session_id is None:
            if config is not None:
                body["config"] = config
            reply = await self._request("POST", "/call", body)
        else:
            reply = await self._request("POST", f"/sessions/{session_id}/call", body)
        return ToolResult(**{k: reply[k] for k in ToolResult.__dataclass_fields__ if k in reply})

    async def run_code(
        self,
        code: str,
        language: str = "python",
        run_timeout: float = 10.0,
        stdin: str | None = None,
        files: dict[str, str] | None = None,
        fetch_files: list[str] | None = None,
        memory_limit_mb: int = -1,
    ) -> dict:
        """POST /run_code (SandboxFusion schema); returns the RunCodeResponse as a dict."""
        return await self._request(
            "POST",
            "/run_code",
            {
                "code": code,
                "language": language,
                "run_timeout": run_timeout,
                "stdin": stdin,
                "files": files or {},
                "fetch_files": fetch_files or [],
                "memory_limit_MB": memory_limit_mb,
            },
        )


class SyncSandboxClient:
    """The same API, blocking, for scripts and evaluation code without an event loop."""

    def __init__(
        self, base_url: str, secret: str | None = None, timeout_s: float = 60.0, max_retries: int = 5
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = SandboxClient(base_url, secret, timeout_s, max_retries)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(method):
            return method
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        """Close the connections and the private event loop."""
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def __enter__(self) -> SyncSandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LocalServer:
    """A running local service: where it listens and its subprocess."""

    base_url: str
    port: int
    secret: str | None
    process: subprocess.Popen


@contextlib.contextmanager
def local_sandbox_server(
    args: list[str] | None = None,
    *,
    secret: str | None = None,
    ready_timeout_s: float = 60.0,
    log_path: str | None = None,
) -> Iterator[LocalServer]:
    """Start `python -m tools_sandbox.server` on a free 127.0.0.1 port and wait for /health.

    Args:
        args: extra server arguments, e.g. `["--backend", "rlimit", "--wall-s", "2"]`.
        secret: shared secret to require (passed through an environment variable, never argv).
        ready_timeout_s: how long to wait for /health before giving up (the log tail is in the error).
        log_path: where the server's log goes (default: a temporary file).

    On exit the server gets SIGTERM (it then kills every sandbox), and SIGKILL if it lingers.
    """
    workdir = tempfile.mkdtemp(prefix="sandbox-server-")
    port_file = os.path.join(workdir, "port")
    log_path = log_path or os.path.join(workdir, "server.log")  # removed with workdir; pass one to keep it
    env = dict(os.environ)
    argv = [
        sys.executable,
        "-m",
        "tools_sandbox.server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        port_file,
        *(args or []),
    ]
    if secret:
        env["TOOLS_SANDBOX_SECRET"] = secret
        argv += ["--secret-env", "TOOLS_SANDBOX_SECRET"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        base_url = _wait_ready(process, port_file, log_path, ready_timeout_s)
        yield LocalServer(base_url, int(base_url.rsplit(":", 1)[1]), secret, process)
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen, port_file: str, log_path: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if os.path.exists(port_file):
            base_url = f"http://127.0.0.1:{open(port_file).read().strip()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    return base_url
        time.sleep(0.1)
    tail = open(log_path, errors="replace").read()[-3000:]
    _stop(process)
    raise RuntimeError(
        f"the sandbox server did not become healthy within {timeout_s:g} s "
        f"(exit status {process.poll()}); its log ends with:\n{tail}"
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
