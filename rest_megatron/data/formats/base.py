"""What every format converter shares: reading JSON/JSONL sources by line, outcomes, record building.

A converter turns one published data set into our prompt records (the shape `data/prompts.py` loads):

    {"id": ..., "source": <format>, "messages": [...], "tools": [{"type": "function", "function": {...}}],
     "ground_truth": {"calls": [{"name", "arguments"}, ...], "ordered": bool, "answer"?: str, ...}}

It yields one outcome per source record: `Converted` (one or more records) or `Rejected` (the line, a short
reason key and a sentence). Converters never stop on a bad record; `RecordError` is how a per-record
function says "reject this one", and `per_record` turns it into a `Rejected`. Only an unreadable input
(missing, not UTF-8) raises `InputError`, because then no record can be trusted.

Sources are JSONL, or one JSON array (ToolRL's rlla_rl.json, xLAM's 60k file and API-Bank's test files are
arrays). Array elements are reported by the line they start on; an array element that is not valid JSON
ends the read there, since the parser cannot find where the next element begins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InputError(Exception):
    """The input cannot be read at all (missing, a directory, not UTF-8)."""


class RecordError(Exception):
    """One source record cannot be converted: `reason` is a short key for counting, `detail` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Converted:
    """The records made from the source record that starts on `line` (1-based)."""

    line: int
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Rejected:
    """A source record that was dropped, and why."""

    line: int
    reason: str
    detail: str


Outcome = Converted | Rejected


@dataclass(frozen=True)
class ConvertOptions:
    """Per-run settings a format may need; most formats need none."""

    answers: Path | None = None
    """BFCL only: the possible_answer file holding the ground truth of the questions file."""


def read_text(path: Path) -> str:
    """The whole file as text, or InputError naming the problem."""
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if not path.is_file():
        raise InputError(f"input {path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"input {path} is not UTF-8 text ({err}); convert it to UTF-8 first") from None
    except OSError as err:
        raise InputError(f"input {path} cannot be read: {err}") from None


def iter_json_records(path: Path) -> Iterator[tuple[int, Any] | Rejected]:
    """(line, decoded value) per record of a JSONL file or a JSON array; `Rejected` for undecodable ones."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_array(text, len(text) - len(stripped))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError) as err:
            yield Rejected(number, "invalid_json", f"not valid JSON ({err})")


def _iter_array(text: str, start: int) -> Iterator[tuple[int, Any] | Rejected]:
    decoder = json.JSONDecoder()
    pos, line, counted = start + 1, 1, 0

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    def skip_space(offset: int) -> int:
        while offset < len(text) and text[offset] in " \t\r\n":
            offset += 1
        return offset

    pos = skip_space(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        pos = skip_space(pos)
        number = line_at(pos)
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as err:
            yield Rejected(
                number,
                "invalid_json",
                f"array element is not valid JSON ({err}); the rest of the file was not read",
            )
            return
        yield number, value
        pos = skip_space(pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]" and not text[pos + 1 :].strip():
            return
        yield Rejected(
            line_at(pos),
            "invalid_json",
            "expected ',' or a final ']' after an array element; the rest of the file was not read",
        )
        return


def per_record(path: Path, convert: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> Iterator[Outcome]:
    """Apply a per-record `convert` to every JSON object of `path`, turning RecordError into Rejected."""
    return convert_items(iter_json_records(path), convert)


def convert_items(
    items: Iterable[tuple[int, Any] | Rejected], convert: Callable[[dict[str, Any]], list[dict[str, Any]]]
) -> Iterator[Outcome]:
    """`per_record` over records already read (for formats that look at the whole file first)."""
    for item in items:
        if isinstance(item, Rejected):
            yield item
            continue
        line, value = item
        if not isinstance(value, dict):
            yield Rejected(
                line, "not_an_object", f"a record must be a JSON object, got {type(value).__name__}"
            )
            continue
        try:
            yield Converted(line, convert(value))
        except RecordError as err:
            yield Rejected(line, err.reason, err.detail)


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """record[key], which must exist, be of `kind` and not be empty; RecordError(missing_field) otherwise."""
    if key not in record or record[key] is None:
        raise RecordError(
            "missing_field", f"no {key!r} field (fields present: {', '.join(sorted(record)) or 'none'})"
        )
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError("missing_field", f"{key!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value):
        raise RecordError("missing_field", f"{key!r} is empty")
    return value


def decode_json_field(value: Any, key: str, reason: str) -> Any:
    """A field that is either already decoded or a JSON string (xLAM stores lists as strings)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as err:
        raise RecordError(reason, f"{key!r} is a string that is not valid JSON ({err})") from None


def make_record(
    source: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    *,
    answer: str | None = None,
    ordered: bool = False,
    record_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One output record; `tools` are bare function schemas and come out wrapped OpenAI-style."""
    ground_truth: dict[str, Any] = {"calls": calls, "ordered": ordered}
    if answer is not None:
        ground_truth["answer"] = answer
    ground_truth.update(extra or {})
    record: dict[str, Any] = (
        {"id": record_id, "source": source} if record_id is not None else {"source": source}
    )
    record.update(
        messages=messages,
        tools=[{"type": "function", "function": t} for t in tools],
        ground_truth=ground_truth,
    )
    return record


def call_message(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant turn of earlier calls, in the `tool_calls` form our chat template renders."""
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": c} for c in calls],
    }
