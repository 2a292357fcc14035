"""ToolRL's rlla data (Qian et al. 2025; the RL set ResT trains on): instruction, input, output.

    {"instruction": "<system prompt listing the tools>",
     "input": "**Dialogue Records History**\n<user>…</user>",
     "output": "<think>…</think>\n<tool_call>\n{\"name\": …, \"parameters\": {…}}\n…\n</tool_call>"}
    (or "<think>…</think>\n<response>…</response>" for a turn that answers without calling)

The raw release (`rlla_4k_raw/rlla_rl.json`) is one JSON array; JSONL is read too. The prompt keeps
ToolRL's own split: `instruction` as the system turn, verbatim (it teaches the <think>/<tool_call>/<response>
format the `toolrl` reward checks), and `input` as the user turn. The tools are parsed out of the
instruction's numbered list ("1. Name: …\nDescription: …\nParameters: {…}", the parameters as JSON or as
a Python dict) so that calls can be checked and matched. The record says `render_tools: false`: the
prompt is rendered without `tools=`, exactly as ToolRL and the ResT authors render it, because a chat
template's own tool section (Qwen3's asks for `"arguments"`, one call per block) would contradict the
instruction's format. Ground truth: the calls of the output, the
<response> text as `answer` when there is one, and the output verbatim as `reference` for the `toolrl`
reward, which scores against that string.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rest_megatron.algo.tool_calls import parse_tool_calls
from rest_megatron.data.formats.base import (
    ConvertOptions,
    Outcome,
    RecordError,
    make_record,
    per_record,
    require,
)
from rest_megatron.data.formats.schema import function_schemas

_TOOL_ENTRY = re.compile(
    r"^[ \t]*\d+\.[ \t]*Name:[ \t]*(?P<name>[^\n]+?)[ \t]*\n"
    r"[ \t]*Description:[ \t]*(?P<description>.*?)\n"
    r"[ \t]*Parameters:[ \t]*(?P<parameters>.*?)[ \t]*(?=\n[ \t]*\d+\.[ \t]*Name:|\n[ \t]*\n|\Z)",
    re.MULTILINE | re.DOTALL,
)


def _parameters(text: str, name: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    raise RecordError(
        "bad_tool_schema",
        f"parameters of tool {name!r} in the instruction are neither JSON nor a Python literal",
    )


def instruction_tools(instruction: str) -> list[dict[str, Any]]:
    """The numbered tool list of a ToolRL instruction, as function schemas ([] when there is none)."""
    raw = [
        {
            "name": m["name"],
            "description": m["description"].strip(),
            "parameters": _parameters(m["parameters"], m["name"]),
        }
        for m in _TOOL_ENTRY.finditer(instruction)
    ]
    return function_schemas(raw, "instruction tools")


def convert_record(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One rlla record as one prompt record."""
    instruction = require(record, "instruction")
    user = require(record, "input")
    output = require(record, "output")
    tools = instruction_tools(instruction)
    parsed = parse_tool_calls(output)
    if parsed.errors:
        error = parsed.errors[0]
        reason = "unparseable_arguments" if '"arguments"' in error.message else "unparseable_call"
        raise RecordError(reason, f"output tool call: {error.message} in {error.raw.strip()[:120]!r}")
    has_response = "<response>" in output
    if not parsed.calls and not has_response:
        raise RecordError("no_ground_truth", "the output has neither a <tool_call> nor a <response>")
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": user}]
    calls = [call.as_dict() for call in parsed.calls]
    answer = (parsed.answer or "") if has_response else None
    record = make_record("toolrl", messages, tools, calls, answer=answer, extra={"reference": output})
    return [{**record, "render_tools": False}]


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every record of an rlla file."""
    return per_record(path, convert_record)
