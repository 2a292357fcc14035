"""Parse an assistant turn in the Qwen/Hermes tool-call format (docs/design.md §7).

    <think> reasoning </think>
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>
    <response> optional final answer (ToolRL format) </response>

A turn may hold several `<tool_call>` blocks, and a block may hold several calls: a JSON list, or one JSON
object per line (the ToolRL data format). "parameters" is accepted as a synonym of "arguments", and
arguments given as a JSON *string* are decoded (some models emit them so). Anything malformed becomes a
`ToolCallError` whose message can be shown to the model; `parse_tool_calls` never raises.

Text inside `<think>…</think>` is reasoning, never a call: a model that talks about `<tool_call>` while
thinking does not call anything. The rollout executes `calls` and reports `errors`; rewards score both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<response>", "</response>"
#: The keys a call's arguments may come under: Hermes/Qwen write "arguments", ToolRL "parameters".
ARGUMENT_KEYS = ("arguments", "parameters")

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_RESPONSE_RE = re.compile(r"<response>(.*?)</response>", re.DOTALL)
_BLOCK_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One well-formed call."""

    name: str
    arguments: dict[str, Any]
    block: int  # index of the <tool_call> block it came from (0-based, in text order)
    raw: str  # the JSON text of this call
    arguments_key: str | None = None  # which of ARGUMENT_KEYS held the arguments; None when neither

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ToolCallError:
    """A malformed call: what is wrong, in words for the model, and the offending text."""

    message: str
    raw: str
    block: int


@dataclass(frozen=True)
class ParsedResponse:
    """Everything the rollout and the rewards need from one assistant turn."""

    calls: tuple[ToolCall, ...]
    errors: tuple[ToolCallError, ...]
    think: str | None  # the reasoning text (stripped), None without think tags
    answer: (
        str | None
    )  # <response> content if tagged, else the text outside think and tool calls; None if empty
    num_blocks: int  # number of <tool_call> blocks, closed or not


def _split_think(text: str) -> tuple[str | None, str]:
    """(reasoning, text with the reasoning removed). Handles a missing <think> (prefilled by the template)."""
    match = _THINK_RE.search(text)
    if match is not None:
        return match.group(1).strip(), text[: match.start()] + text[match.end() :]
    if "</think>" in text:  # Qwen3 templates can open <think> in the prompt; the model only closes it.
        head, _, tail = text.partition("</think>")
        return head.strip(), tail
    if "<think>" in text:  # never closed: everything after it is unfinished reasoning
        head, _, tail = text.partition("<think>")
        return tail.strip(), head
    return None, text


_NOT_JSON = object()


def _loads(text: str) -> tuple[Any, str]:
    """(decoded value, "") or (_NOT_JSON, the decoder's complaint); deep nesting is a complaint too."""
    try:
        return json.loads(text), ""
    except (ValueError, RecursionError) as err:
        return _NOT_JSON, str(err) or type(err).__name__


def _make_call(obj: Any, raw: str, block: int) -> ToolCall | ToolCallError:
    if not isinstance(obj, dict):
        return ToolCallError(f"a tool call must be a JSON object, got {type(obj).__name__}", raw, block)
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCallError('a tool call needs a non-empty string "name"', raw, block)
    arguments_key = next((key for key in ARGUMENT_KEYS if key in obj), None)
    arguments = obj[arguments_key] if arguments_key else {}
    if isinstance(arguments, str):
        arguments, err = _loads(arguments) if arguments.strip() else ({}, "")
        if arguments is _NOT_JSON:
            return ToolCallError(
                f'"arguments" of {name!r} is a string that is not valid JSON ({err})', raw, block
            )
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ToolCallError(f'"arguments" of {name!r} must be a JSON object', raw, block)
    return ToolCall(name=name.strip(), arguments=arguments, block=block, raw=raw, arguments_key=arguments_key)


def _parse_block(content: str, block: int) -> list[ToolCall | ToolCallError]:
    body = content.strip()
    if not body:
        return [ToolCallError("empty <tool_call> block", content, block)]
    obj, whole_err = _loads(body)
    if obj is _NOT_JSON:
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if len(lines) <= 1:
            return [ToolCallError(f"tool call is not valid JSON ({whole_err})", body, block)]
        # ToolRL format: one JSON object per line.
        out: list[ToolCall | ToolCallError] = []
        for line in lines:
            line_obj, err = _loads(line)
            if line_obj is _NOT_JSON:
                out.append(ToolCallError(f"tool call is not valid JSON ({err})", line, block))
            else:
                out.append(_make_call(line_obj, line, block))
        return out
    if isinstance(obj, list):
        if not obj:
            return [ToolCallError("empty list of tool calls", body, block)]
        # Each element keeps the block's text as its raw form: re-serialising could itself fail.
        return [_make_call(item, body, block) for item in obj]
    return [_make_call(obj, body, block)]


def parse_tool_calls(text: str) -> ParsedResponse:
    """Split one assistant turn into calls, call errors, reasoning and answer. Never raises."""
    think, body = _split_think(text)
    items: list[ToolCall | ToolCallError] = []
    num_blocks = 0
    last_end = 0
    outside: list[str] = []
    for match in _BLOCK_RE.finditer(body):
        outside.append(body[last_end : match.start()])
        items.extend(_parse_block(match.group(1), num_blocks))
        num_blocks += 1
        last_end = match.end()
    rest = body[last_end:]
    if TOOL_CALL_OPEN in rest:
        head, _, tail = rest.partition(TOOL_CALL_OPEN)
        items.append(
            ToolCallError(
                f"unclosed {TOOL_CALL_OPEN}: end each call with {TOOL_CALL_CLOSE}", tail, num_blocks
            )
        )
        num_blocks += 1
        rest = head
    outside.append(rest)

    response = _RESPONSE_RE.search(body)
    if response is not None:
        answer = response.group(1).strip()
    else:
        answer = "".join(outside).replace(TOOL_CALL_CLOSE, "").strip()
    return ParsedResponse(
        calls=tuple(i for i in items if isinstance(i, ToolCall)),
        errors=tuple(i for i in items if isinstance(i, ToolCallError)),
        think=think,
        answer=answer or None,
        num_blocks=num_blocks,
    )
