"""Executing an assistant turn's tool calls: concurrently, each bounded in time, never raising.

`execute_turn` turns a parsed assistant turn into tool messages for the model and records for the
trajectory. Every failure becomes text the model reads in the tool turn:
- a malformed call (`ToolCallError`) -> its parser message;
- a call to a tool the prompt did not offer -> "unknown tool", with the offered names;
- a tool that fails or times out in the sandbox -> the sandbox's error (`ToolResult.render()`);
- the sandbox service itself failing (unreachable, 5xx through its retries) -> "the tool service
  failed", also recorded in the trajectory's `errors` so infrastructure trouble is visible.
Tool messages keep the order of the calls in the turn, so the model can match results to calls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from rest_megatron.algo.tool_calls import ParsedResponse, ToolCall, ToolCallError
from rest_megatron.rollout.trajectory import ToolCallRecord

_CLIENT_GRACE_S = 5.0
"""Extra seconds the client waits beyond the tool's own time limit (the sandbox enforces the limit)."""


class ToolOutcome(Protocol):
    """What a tool call returned (tools_sandbox.client.ToolResult has this shape)."""

    ok: bool
    output: str
    error: str | None
    timed_out: bool
    duration_s: float

    def render(self) -> str: ...


class ToolExecutor(Protocol):
    """Runs one tool call; `tools_sandbox.client.SandboxClient` is one."""

    async def call_tool(
        self, name: str, arguments: dict, session_id: str | None = None, timeout_s: float | None = None
    ) -> ToolOutcome: ...


def tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    """Names of function-tool schemas (`{"type": "function", "function": {"name": ...}}` or bare)."""
    names = []
    for tool in tools or []:
        spec = tool.get("function", tool)
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            names.append(spec["name"])
    return names


async def _run_call(
    executor: ToolExecutor,
    call: ToolCall,
    *,
    timeout_s: float,
    session_id: str | None,
    turn: int,
    errors: list[str],
) -> ToolCallRecord:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(
            executor.call_tool(call.name, call.arguments, session_id=session_id, timeout_s=timeout_s),
            timeout=timeout_s + _CLIENT_GRACE_S,
        )
    except asyncio.TimeoutError:
        message = f"Error: the tool {call.name!r} did not answer within {timeout_s:g} s"
        return ToolCallRecord(
            turn,
            call.name,
            call.arguments,
            False,
            message,
            error="timeout",
            timed_out=True,
            duration_s=time.perf_counter() - started,
        )
    except Exception as exc:  # noqa: BLE001 - the sandbox failing must not kill the rollout
        errors.append(f"turn {turn}: tool service failed on {call.name!r}: {type(exc).__name__}: {exc}")
        message = f"Error: the tool service failed ({type(exc).__name__}); try again"
        return ToolCallRecord(
            turn,
            call.name,
            call.arguments,
            False,
            message,
            error=str(exc),
            duration_s=time.perf_counter() - started,
        )
    return ToolCallRecord(
        turn,
        call.name,
        call.arguments,
        result.ok,
        result.render(),
        error=result.error,
        timed_out=result.timed_out,
        duration_s=result.duration_s,
    )


async def execute_turn(
    executor: ToolExecutor,
    parsed: ParsedResponse,
    *,
    allowed: list[str],
    turn: int,
    timeout_s: float,
    session_id: str | None = None,
    errors: list[str],
) -> tuple[list[dict[str, Any]], list[ToolCallRecord]]:
    """Run the turn's calls concurrently; returns (tool messages in call order, records).

    Args:
        allowed: tool names the prompt offered; other names get an "unknown tool" error.
        errors: infrastructure failures are appended here (the trajectory's `errors`).
    """
    items: list[ToolCall | ToolCallError] = sorted(
        [*parsed.calls, *parsed.errors], key=lambda item: item.block
    )
    jobs = []
    for item in items:
        if isinstance(item, ToolCallError):
            jobs.append(
                _done(ToolCallRecord(turn, None, None, False, f"Error: {item.message}", error=item.message))
            )
        elif item.name not in allowed:
            message = f"unknown tool {item.name!r}; available tools: {', '.join(allowed) or 'none'}"
            jobs.append(
                _done(
                    ToolCallRecord(turn, item.name, item.arguments, False, f"Error: {message}", error=message)
                )
            )
        else:
            jobs.append(
                _run_call(
                    executor, item, timeout_s=timeout_s, session_id=session_id, turn=turn, errors=errors
                )
            )
    records = list(await asyncio.gather(*jobs))
    return [{"role": "tool", "content": record.output} for record in records], records


async def _done(record: ToolCallRecord) -> ToolCallRecord:
    return record
