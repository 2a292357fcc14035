"""API-Bank (Li et al. 2023) evaluation files that users bring, read into our eval records.

Three published shapes, recognised record by record (a file may be JSONL or one JSON array):

1. Prompt/answer pairs (`json_test_data/level-1-api.json`, `level-2-api.json`, the `-response` files):
   {"file", "id", "instruction": "...API descriptions:\n{json per API}", "input": "User: …\nAI: …\n
   API-Request: [Api(k='v')]->result\n…\nGenerate API Request:",
   "expected_output": "API-Request: [Api(k='v')]"}
   (or "AI: text" for response generation; "output" is read where "expected_output" is missing). The tools
   are the instruction's API descriptions plus any a ToolSearcher call in the history returned (level 2).
2. Level-3 tasks (`level-3.json`): {"requirement", "response", "apis": [{"api_name", "input", "output"}]}.
   The prompt is the requirement; the ground truth is every call in order (`ordered: true`), ToolSearcher's
   included, and the response as `answer`. The tools are ToolSearcher and every API its searches
   returned, offered up front, so a model is scored on the calls, not on the search alone.
3. Raw dialogs (`lv1-lv2-samples/*/*.jsonl`): one turn per line, {"role": "User"|"AI"|"API", "text",
   "api_name", "param_dict", "result"}; the whole file is one dialog (a record may also hold one as
   {"dialog": [turns]}). One eval record per API turn, the dialog before it as the prompt. These files
   carry no API descriptions (API-Bank keeps them in its Python tool classes), so each API's schema is
   inferred from the arguments its calls pass: names and JSON types, no descriptions. In a dialog file, a
   bad line is reported and every later API turn is rejected too, as its history would have a hole.

API-Bank's own instructions ask for `[Api(key='value')]` replies, not our format, so they are dropped;
the chat template announces the tools and our call format. API parameters carry no optionality, so all
are required.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rest_megatron.data.formats.base import (
    Converted,
    ConvertOptions,
    Outcome,
    RecordError,
    Rejected,
    call_message,
    convert_items,
    iter_json_records,
    make_record,
    require,
)
from rest_megatron.data.formats.pycalls import looks_like_calls, parse_calls
from rest_megatron.data.formats.schema import function_schema

TOOL_SEARCHER = {
    "name": "ToolSearcher",
    "description": "Search API-Bank's tool library and return the best-matching API description(s).",
    "input_parameters": {"keywords": {"type": "str", "description": "What to search for."}},
}
_JSON_TYPE_OF = {str: "str", bool: "bool", int: "int", float: "float", list: "list", dict: "dict"}


def _python_or_json(text: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _described_apis(value: Any) -> list[dict[str, Any]]:
    """API descriptions found in a value: a description, a list of them, or {"best_matchs": ...}."""
    if isinstance(value, dict) and "best_matchs" in value:
        value = value["best_matchs"]
    items = value if isinstance(value, list) else [value]
    return [
        v for v in items if isinstance(v, dict) and isinstance(v.get("name"), str) and "input_parameters" in v
    ]


def _tool_list(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function schemas of API descriptions, first description of each name kept."""
    tools: dict[str, dict[str, Any]] = {}
    for description in descriptions:
        if description["name"] not in tools:
            tools[description["name"]] = function_schema(description, f"API {description['name']!r}")
    return list(tools.values())


def instruction_apis(instruction: str) -> list[dict[str, Any]]:
    """Every JSON object after "API descriptions:" in an instruction."""
    _, marker, text = instruction.partition("API descriptions:")
    if not marker:
        return []
    decoder, found, pos = json.JSONDecoder(), [], text.find("{")
    while pos != -1:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            raise RecordError(
                "bad_tool_schema", f"an API description is not valid JSON near {text[pos : pos + 60]!r}"
            ) from None
        found.extend(_described_apis(value))
        pos = text.find("{", end)
    return found


def dialog_messages(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages, APIs described by ToolSearcher results) of an API-Bank "User: …\nAI: …" history."""
    messages: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Generate API Request") or stripped.startswith("Generate AI Response"):
            continue
        if stripped.startswith("User:"):
            messages.append({"role": "user", "content": stripped[5:].strip()})
        elif stripped.startswith("AI:"):
            messages.append({"role": "assistant", "content": stripped[3:].strip()})
        elif stripped.startswith("API-Request:"):
            request = stripped[len("API-Request:") :].strip()
            call_text, arrow, result = request.partition("]->")
            calls = parse_calls(call_text + "]" if arrow else request)
            messages.append(call_message(calls))
            if arrow:
                messages.append({"role": "tool", "content": result.strip()})
                found.extend(_described_apis(_python_or_json(result.strip())))
        elif stripped and messages and "tool_calls" not in messages[-1]:
            messages[-1]["content"] += "\n" + stripped
        elif stripped:
            raise RecordError("bad_message", f"history line {stripped[:60]!r} belongs to no speaker")
    return messages, found


def _prompt_answer(record: dict[str, Any]) -> list[dict[str, Any]]:
    instruction = require(record, "instruction")
    messages, searched = dialog_messages(require(record, "input"))
    expected = record.get("expected_output", record.get("output"))
    if not isinstance(expected, str) or not expected.strip():
        raise RecordError("missing_field", "no 'expected_output' (or 'output') text")
    tools = _tool_list(instruction_apis(instruction) + searched)
    expected = expected.strip()
    record_id = f"apibank-{record.get('file', '')}-{record['id']}" if "id" in record else None
    if expected.startswith("API-Request:") or looks_like_calls(expected):
        calls = parse_calls(expected.removeprefix("API-Request:"))
        return [make_record("apibank", messages, tools, calls, record_id=record_id)]
    answer = expected.removeprefix("AI:").strip()
    return [make_record("apibank", messages, tools, [], answer=answer, record_id=record_id)]


def _level3(record: dict[str, Any]) -> list[dict[str, Any]]:
    requirement = require(record, "requirement")
    apis = require(record, "apis", list)
    calls, described = [], [TOOL_SEARCHER]
    for i, api in enumerate(apis):
        if (
            not isinstance(api, dict)
            or not isinstance(api.get("api_name"), str)
            or not isinstance(api.get("input"), dict)
        ):
            raise RecordError(
                "unparseable_call", f"apis[{i}] is not {{'api_name': str, 'input': {{...}}, 'output': ...}}"
            )
        calls.append({"name": api["api_name"], "arguments": api["input"]})
        if api["api_name"] == "ToolSearcher":
            output = api.get("output")
            described.extend(_described_apis(output.get("output") if isinstance(output, dict) else output))
    answer = record.get("response") if isinstance(record.get("response"), str) else None
    messages = [{"role": "user", "content": requirement.strip()}]
    return [make_record("apibank", messages, _tool_list(described), calls, answer=answer, ordered=True)]


def _dialog_turn(turn: Any) -> tuple[str, Any]:
    """("text", message) or ("api", call with result) of one raw dialog turn; RecordError if malformed."""
    if not isinstance(turn, dict) or turn.get("role") not in ("User", "AI", "API"):
        raise RecordError("bad_message", "a dialog turn needs a role among 'User', 'AI', 'API'")
    if turn["role"] != "API":
        if not isinstance(turn.get("text"), str):
            raise RecordError("bad_message", f"a {turn['role']} turn needs a 'text' string")
        return "text", {"role": "user" if turn["role"] == "User" else "assistant", "content": turn["text"]}
    if not isinstance(turn.get("api_name"), str) or not isinstance(turn.get("param_dict"), dict):
        raise RecordError(
            "unparseable_call", "an API turn needs 'api_name' (string) and 'param_dict' (object)"
        )
    result = turn.get("result")
    output = result.get("output") if isinstance(result, dict) else result
    return "api", ({"name": turn["api_name"], "arguments": turn["param_dict"]}, output)


def _inferred_tools(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schemas guessed from the arguments the dialog's calls pass (raw dialogs carry no descriptions)."""
    described: dict[str, dict[str, Any]] = {}
    for call in calls:
        params = described.setdefault(call["name"], {"name": call["name"], "input_parameters": {}})[
            "input_parameters"
        ]
        for key, value in call["arguments"].items():
            params.setdefault(key, {"type": _JSON_TYPE_OF.get(type(value), "str"), "description": ""})
    return _tool_list(list(described.values()))


def dialog_records(items: list[tuple[int, Any] | Rejected]) -> Iterator[Outcome]:
    """One eval record per API turn of a dialog given as (line, turn) pairs, in line order."""
    parsed: list[tuple[int, str, Any]] = []
    for item in items:
        if isinstance(item, Rejected):
            parsed.append((item.line, "broken", item))
            continue
        line, turn = item
        try:
            parsed.append((line, *_dialog_turn(turn)))
        except RecordError as err:
            parsed.append((line, "broken", Rejected(line, err.reason, err.detail)))
    tools = _inferred_tools([value[0] for _, kind, value in parsed if kind == "api"])
    history: list[dict[str, Any]] = []
    first_bad: int | None = None
    for line, kind, value in parsed:
        if kind == "broken":
            first_bad = first_bad or line
            yield value
        elif kind == "text":
            history.append(value)
        elif first_bad is not None:
            yield Rejected(
                line, "bad_history", f"the dialog before this API turn has a bad turn at line {first_bad}"
            )
        else:
            call, output = value
            yield Converted(line, [make_record("apibank", list(history), tools, [call])])
            history.extend([call_message([call]), {"role": "tool", "content": str(output)}])


def _dialog_record(record: dict[str, Any]) -> list[dict[str, Any]]:
    turns = require(record, "dialog", list)
    records = []
    for outcome in dialog_records(list(enumerate(turns))):
        if isinstance(outcome, Rejected):
            raise RecordError(outcome.reason, f"dialog turn {outcome.line}: {outcome.detail}")
        records.extend(outcome.records)
    if not records:
        raise RecordError("no_ground_truth", "the dialog has no API turn")
    return records


def convert_record(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record of shape 1, 2 or a {"dialog": [...]} record, by its fields."""
    if "dialog" in record:
        return _dialog_record(record)
    if "apis" in record or "requirement" in record:
        return _level3(record)
    if "instruction" in record or "input" in record:
        return _prompt_answer(record)
    raise RecordError(
        "unsupported",
        f"not an API-Bank record (fields: {', '.join(sorted(record)) or 'none'}); "
        "expected instruction/input/expected_output, requirement/apis, or role/api_name/param_dict turns",
    )


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every record of an API-Bank file; a file of role-tagged turns is read as one dialog."""
    items = list(iter_json_records(path))
    first = next((item[1] for item in items if not isinstance(item, Rejected)), None)
    if isinstance(first, dict) and "role" in first:
        yield from dialog_records(items)
        return
    yield from convert_items(items, convert_record)
