"""ToolACE (Team-ACE): multi-turn dialogs whose assistant calls are written as Python.

    {"system": "... Here is a list of functions in JSON format that you can invoke:\n[{...tools...}]. ...",
     "conversations": [{"from": "user", "value": "..."},
                       {"from": "assistant", "value": "[Get Weather(city=\"Paris\", days=3)]"},
                       {"from": "tool", "value": "[{\"name\": \"Get Weather\", \"results\": {...}}]"},
                       {"from": "assistant", "value": "It will be sunny."}]}

Each assistant turn becomes one prompt record: the dialog before it is the prompt (earlier calls as
assistant `tool_calls`, tool outputs as `tool` turns) and the turn itself is the ground truth, its calls
when it calls and its text as `answer` when it does not. The tools are the first JSON list of objects with
a "name" in `system` (in BFCL's "type": "dict" dialect; schema.py converts it). The rest of `system`
describes ToolACE's `[func(arg=value)]` output format, which is not ours, so it is dropped: the chat
template announces the tools and our call format. A record is rejected whole when any of its turns is
broken, so no dialog is ever cut at a turn that cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rest_megatron.data.formats.base import (
    ConvertOptions,
    Outcome,
    RecordError,
    call_message,
    make_record,
    per_record,
    require,
)
from rest_megatron.data.formats.pycalls import looks_like_calls, parse_calls
from rest_megatron.data.formats.schema import function_schemas

ROLE_NAMES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


def system_tools(system: str) -> list[dict[str, Any]]:
    """The first JSON list of named objects in the system prompt, as function schemas."""
    decoder = json.JSONDecoder()
    start = system.find("[")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(system, start)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list) and value and all(isinstance(t, dict) and "name" in t for t in value):
            return function_schemas(value, "system tools")
        start = system.find("[", start + 1)
    raise RecordError("bad_tool_schema", "no JSON list of tools found in 'system'")


def convert_record(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One ToolACE dialog as one prompt record per assistant turn."""
    tools = system_tools(require(record, "system"))
    turns = require(record, "conversations", list)
    history: list[dict[str, Any]] = []
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RecordError("bad_message", f"turn {i} is not {{'from': role, 'value': text}}")
        role = ROLE_NAMES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise RecordError(
                "bad_message", f"turn {i} has unknown role {turn.get('from')!r} (known: {sorted(ROLE_NAMES)})"
            )
        text = turn["value"]
        if role != "assistant":
            history.append({"role": role, "content": text})
            continue
        if not history:
            raise RecordError("bad_message", f"turn {i}: the dialog opens with an assistant turn")
        if looks_like_calls(text):
            try:
                calls = parse_calls(text)
            except RecordError as err:
                raise RecordError(err.reason, f"turn {i}: {err.detail}") from None
            out.append(make_record("toolace", list(history), tools, calls, extra={"turn": i}))
            history.append(call_message(calls))
        else:
            out.append(make_record("toolace", list(history), tools, [], answer=text, extra={"turn": i}))
            history.append({"role": "assistant", "content": text})
    if not out:
        raise RecordError("no_ground_truth", "the dialog has no assistant turn")
    return out


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every dialog of a ToolACE file."""
    return per_record(path, convert_record)
