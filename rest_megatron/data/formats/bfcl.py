"""BFCL (Berkeley Function-Calling Leaderboard, `bfcl-eval` package): questions plus possible answers.

Questions file, one JSON per line: {"id": "simple_python_0", "question": [[{"role": "user", "content": …}]],
"function": [{"name", "description", "parameters": {"type": "dict", "properties", "required"}}]}.
Answers file (`possible_answer/<same name>`): {"id", "ground_truth": [{"func": {"arg": [allowed, …]}}]},
where each argument lists every accepted value and "" among them means "may be omitted".

Kept: the single-turn categories with a ground truth (simple_*, multiple, parallel, parallel_multiple and
their live_ versions) and the irrelevance ones (`calls: []`, `no_call_expected: true`). Rejected as
`unsupported`: multi-turn, memory, web-search and format-sensitivity entries, which only BFCL's own harness
can run, and live_relevance, whose ground truth is "any call", which calls cannot express.

Ground truth: `calls` holds one canonical call per expected call (for each argument the first accepted
value other than "", the argument left out when "" is all there is; nested dicts are resolved the same
way), so the shared matcher and rewards work unchanged; `bfcl_ground_truth` keeps BFCL's lists of accepted
values verbatim for a BFCL-exact check. Parallel calls are order-insensitive. Function names keep their
dots (`math.factorial`): our calls are Hermes text, not OpenAI API names, and BFCL's answers use the dots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rest_megatron.data.formats.base import (
    ConvertOptions,
    InputError,
    Outcome,
    RecordError,
    Rejected,
    iter_json_records,
    make_record,
    per_record,
    require,
)
from rest_megatron.data.formats.schema import function_schemas

_UNSUPPORTED = ("multi_turn", "memory", "web_search", "format_sensitivity", "live_relevance")
_NO_CALL = ("irrelevance", "live_irrelevance")
_OMIT = object()


def category(record_id: str) -> str:
    """ "simple_python_12" -> "simple_python", "live_simple_3-2-0" -> "live_simple"."""
    head, _, tail = record_id.rpartition("_")
    return head if tail and (tail[0].isdigit()) else record_id


def default_answers_path(questions: Path) -> Path:
    """Where bfcl-eval keeps the answers of a questions file: possible_answer/<same name> beside it."""
    return questions.parent / "possible_answer" / questions.name


def _pick(accepted: Any, where: str) -> Any:
    """The canonical value of a list of accepted values (_OMIT when only "" is accepted)."""
    if not isinstance(accepted, list):
        raise RecordError(
            "unparseable_arguments", f"{where}: accepted values must be a list, got {accepted!r}"
        )
    for value in accepted:
        if value != "":
            return _canonical(value, where)
    return _OMIT


def _canonical(value: Any, where: str) -> Any:
    """Resolve dicts nested inside an accepted value, whose entries are accepted-value lists again."""
    if isinstance(value, dict):
        out = {}
        for key, accepted in value.items():
            picked = _pick(accepted, f"{where}.{key}") if isinstance(accepted, list) else accepted
            if picked is not _OMIT:
                out[key] = picked
        return out
    if isinstance(value, list):
        return [_canonical(v, where) if isinstance(v, dict) else v for v in value]
    return value


def canonical_calls(ground_truth: Any, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{"name", "arguments"}] with one accepted value per argument, from BFCL's answer lists.

    An argument the tool does not declare is left out when BFCL accepts leaving it out (a few answers
    list such optional extras); otherwise it stays, and validation reports it.
    """
    if not isinstance(ground_truth, list):
        raise RecordError(
            "unparseable_call", "'ground_truth' must be a list of {function: {argument: [values]}}"
        )
    declared = {t["name"]: t["parameters"]["properties"] for t in tools}
    calls = []
    for i, entry in enumerate(ground_truth):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise RecordError(
                "unparseable_call", f"ground_truth[{i}] must map exactly one function name to its arguments"
            )
        ((name, arguments),) = entry.items()
        if not isinstance(arguments, dict):
            raise RecordError(
                "unparseable_arguments", f"ground_truth[{i}] ({name!r}): arguments must be an object"
            )
        known = declared.get(name, {})
        picked = {
            arg: _pick(accepted, f"{name}.{arg}")
            for arg, accepted in arguments.items()
            if arg in known or not (isinstance(accepted, list) and "" in accepted)
        }
        calls.append({"name": name, "arguments": {k: v for k, v in picked.items() if v is not _OMIT}})
    return calls


def read_answers(path: Path) -> dict[str, Any]:
    """{id: ground_truth} of an answers file; a broken answers file is an input error, not a record one."""
    answers: dict[str, Any] = {}
    for item in iter_json_records(path):
        if isinstance(item, Rejected):
            raise InputError(f"answers file {path}, line {item.line}: {item.detail}")
        _, value = item
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            answers[value["id"]] = value.get("ground_truth")
    return answers


def convert_record(
    record: dict[str, Any], answers: dict[str, Any] | None, answers_path: Path | None
) -> list[dict[str, Any]]:
    """One BFCL question (with its answer looked up by id) as one prompt record."""
    record_id = require(record, "id")
    kind = category(record_id)
    if kind.startswith(_UNSUPPORTED) or "involved_classes" in record:
        raise RecordError(
            "unsupported",
            f"BFCL category {kind!r} runs only in BFCL's own harness (single-turn categories are supported)",
        )
    question = require(record, "question", list)
    if len(question) != 1 or not isinstance(question[0], list) or not question[0]:
        raise RecordError(
            "unsupported", f"{len(question)} question turns; only single-turn questions are supported"
        )
    messages = question[0]
    tools = function_schemas(record.get("function", []), "function")  # live_irrelevance may offer none
    extra: dict[str, Any] = {"bfcl_category": kind}
    if kind in _NO_CALL:
        return [
            make_record(
                "bfcl", messages, tools, [], record_id=record_id, extra={**extra, "no_call_expected": True}
            )
        ]
    if answers is None:
        where = f"no answers file at {answers_path}" if answers_path else "no answers file"
        raise RecordError(
            "no_ground_truth", f"{where}; pass --answers PATH (bfcl-eval keeps them in data/possible_answer/)"
        )
    if record_id not in answers:
        raise RecordError("no_ground_truth", f"id {record_id!r} is not in the answers file {answers_path}")
    truth = answers[record_id]
    extra["bfcl_ground_truth"] = truth
    return [
        make_record("bfcl", messages, tools, canonical_calls(truth, tools), record_id=record_id, extra=extra)
    ]


def convert(path: Path, options: ConvertOptions) -> Iterator[Outcome]:
    """Every question of a BFCL file, with ground truth from `options.answers` or the default place."""
    answers_path = options.answers or default_answers_path(path)
    if options.answers is not None and not answers_path.is_file():
        raise InputError(f"answers file {answers_path} does not exist")
    answers = read_answers(answers_path) if answers_path.is_file() else None
    return per_record(path, lambda record: convert_record(record, answers, answers_path))
