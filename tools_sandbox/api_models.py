"""Request and response bodies of the HTTP API (pydantic).

`RunCodeRequest` / `RunCodeResponse` follow SandboxFusion's `/run_code` schema, so a
SandboxFusion client can point at this service and this client at SandboxFusion. Unknown fields in
SandboxFusion requests are ignored (their clients send fields we do not use); our own endpoints
reject unknown fields so typos surface.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LANGUAGES = ("python", "bash")


class RunCodeRequest(BaseModel):
    """SandboxFusion `RunCodeRequest`."""

    model_config = ConfigDict(extra="ignore")
    code: str
    language: str = "python"
    compile_timeout: float = 10.0
    run_timeout: float = 10.0
    memory_limit_MB: int = -1  # noqa: N815 - SandboxFusion's field name
    stdin: str | None = None
    files: dict[str, str | None] = Field(default_factory=dict)
    """name -> base64 content."""
    fetch_files: list[str] = Field(default_factory=list, max_length=64)


class CommandRunResult(BaseModel):
    """SandboxFusion `CommandRunResult`."""

    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    """SandboxFusion `RunCodeResponse`."""

    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)


class ToolCallRequest(BaseModel):
    """One tool call: `{"tool": "ls", "arguments": {...}}`."""

    model_config = ConfigDict(extra="forbid")
    tool: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)
    config: Any = None
    """Stateless calls only: the environment's initial state (e.g. a BFCL initial_config entry)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Optional lower wall-clock limit for this call (the server's limit still applies)."""


class ToolCallResponse(BaseModel):
    """The result of a tool call."""

    ok: bool
    output: str
    error: str | None = None
    truncated: bool = False
    timed_out: bool = False
    duration_s: float = 0.0


class CreateSessionRequest(BaseModel):
    """`{"tools": ["python", "GorillaFileSystem"], "config": {"GorillaFileSystem": {...}}}`."""

    model_config = ConfigDict(extra="forbid")
    tools: list[str] = Field(min_length=1, max_length=64)
    """Environment names or tool names; a tool name brings in its whole environment."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Initial state per environment name (BFCL: the dataset entry's `initial_config`)."""


class CreateSessionResponse(BaseModel):
    """The new session's id, its tool schemas and how long it may idle."""

    session_id: str
    tools: list[dict]
    idle_timeout_s: float
    max_lifetime_s: float
