"""Salesforce xlam-function-calling-60k (APIGen): one user query, its tools, the calls that answer it.

    {"id": 0, "query": "...", "tools": "[{\"name\", \"description\", \"parameters\": {\"p\": {\"type\":
     \"str, optional\", \"description\", \"default\"}}}]", "answers": "[{\"name\", \"arguments\": {...}}]"}

`tools` and `answers` are JSON *strings* in the published file (a JSON array); already-decoded lists are
accepted too. The prompt is the query as one user turn: xLAM has no system prompt, and the chat template
announces the tools. Calls are order-insensitive (`ordered: false`), as APIGen's parallel calls are.
Every xLAM record has at least one call; an empty `answers` is Hammer's irrelevance data (`--format hammer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rest_megatron.data.formats.base import (
    ConvertOptions,
    Outcome,
    RecordError,
    decode_json_field,
    make_record,
    per_record,
    require,
)
from rest_megatron.data.formats.schema import function_schemas


def answer_calls(answers: Any) -> list[dict[str, Any]]:
    """[{"name", "arguments"}] from xLAM answers; arguments given as JSON strings are decoded."""
    if not isinstance(answers, list):
        raise RecordError(
            "unparseable_call", f"'answers' must be a list of calls, got {type(answers).__name__}"
        )
    calls = []
    for i, answer in enumerate(answers):
        if (
            not isinstance(answer, dict)
            or not isinstance(answer.get("name"), str)
            or not answer["name"].strip()
        ):
            raise RecordError("unparseable_call", f"answer {i} is not {{'name': str, 'arguments': {{...}}}}")
        arguments = decode_json_field(
            answer.get("arguments", answer.get("parameters", {})),
            f"answers[{i}].arguments",
            "unparseable_arguments",
        )
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RecordError(
                "unparseable_arguments",
                f"arguments of {answer['name']!r} must be an object, got {type(arguments).__name__}",
            )
        calls.append({"name": answer["name"].strip(), "arguments": arguments})
    return calls


def convert_query_record(record: dict[str, Any], *, source: str, allow_no_call: bool) -> list[dict[str, Any]]:
    """One xLAM-shaped record (xLAM and Hammer share the shape) as one prompt record."""
    query = require(record, "query")
    tools = function_schemas(
        decode_json_field(require(record, "tools", (str, list)), "tools", "bad_tool_schema")
    )
    answers = decode_json_field(record.get("answers", record.get("answer")), "answers", "unparseable_call")
    if answers is None:
        raise RecordError("missing_field", "no 'answers' field")
    calls = answer_calls(answers)
    if not calls and not allow_no_call:
        raise RecordError(
            "no_ground_truth",
            "'answers' is empty; xLAM records always call a tool (irrelevance data: use --format hammer)",
        )
    record_id = f"{source}-{record['id']}" if "id" in record else None
    extra = {} if calls else {"no_call_expected": True}
    return [
        make_record(
            source, [{"role": "user", "content": query}], tools, calls, record_id=record_id, extra=extra
        )
    ]


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every record of an xLAM file."""
    return per_record(path, lambda record: convert_query_record(record, source="xlam", allow_no_call=False))
