"""API-Bank levels 1–3 under the ResT authors' protocol (`API-Bank/generate.py` and `evaluate.py` in
their code).

Data: the processed level files `level-1-api_processed.json`, `level-2-…`, `level-3-…` that the authors
evaluate on (ToolRL's release of API-Bank, github.com/qiancheng0/ToolRL; 399, 67 and 131 entries), each a
JSON array of

    {"system": "<ToolRL-style system prompt listing the APIs>", "user": "<dialogue so far>",
     "answer": {"name": "ModifyRegistration", "parameters": {"appointment_id": "34567890", ...}}}

(`answer` may also be a list, whose first element is the reference). Download them once into a folder
and pass it as `--data`.

Protocol, as the authors run it:
- the prompt is the system and user messages through the model's chat template, with no `tools`
  argument (the system prompt lists the APIs); decoding is greedy (theirs: temperature 1e-4);
- the calls are the JSON lines between the *last* `<tool_call>` and the following `</tool_call>` (with no
  tag, the whole reply's lines); lines that are not JSON are skipped;
- an entry is correct when some call, in order, has exactly the reference's name and parameters (Python
  equality: `1 == 1.0`, `"1" != 1`); a call object without "name" or "parameters" is read as the
  parameters of the reference's function; the first call that is not an object ends the scan (their
  loop stops at the exception it raises);
- per-level accuracy and the micro-averaged overall, in percent rounded to two places.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rest_megatron.eval.bfcl_score import EntryResult
from rest_megatron.eval.single_turn import Prompt

LEVEL_FILE = "level-{level}-api_processed.json"


class ApiBankDataError(ValueError):
    """A level file is missing or not in the processed format; the message names the file and the fix."""


@dataclass(frozen=True)
class ApiBankEntry:
    """One processed entry: its prompt and the reference call."""

    id: str
    """"Level{L}_{index}", the authors' key."""
    level: int
    system: str
    user: str
    name: str
    parameters: Any


def parse_levels(text: str) -> list[int]:
    """ "1,2,3" -> [1, 2, 3].

    Raises:
        ValueError: a level other than 1, 2 or 3.
    """
    levels = []
    for part in (p.strip() for p in text.split(",")):
        if part not in ("1", "2", "3"):
            raise ValueError(
                f"unknown API-Bank level {part!r}; use 1, 2 and/or 3, comma-separated (e.g. --levels 1,2,3)"
            )
        if int(part) not in levels:
            levels.append(int(part))
    return levels


def load_level(data_dir: str | Path, level: int, limit: int | None = None) -> list[ApiBankEntry]:
    """The first `limit` entries (all if None) of one level file in `data_dir`.

    Raises:
        ApiBankDataError: the file is missing, is not JSON, or an entry lacks system/user/answer.
    """
    path = Path(data_dir) / LEVEL_FILE.format(level=level)
    if not path.is_file():
        raise ApiBankDataError(
            f"{path} does not exist; --data must be the folder holding the processed API-Bank "
            f"files {LEVEL_FILE.format(level='{1,2,3}')} (ToolRL's release, which the ResT "
            "authors evaluate on)"
        )
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ApiBankDataError(
            f"{path} is not JSON ({exc}); expected the processed level file, a JSON array"
        ) from exc
    if not isinstance(records, list):
        raise ApiBankDataError(f"{path} holds a {type(records).__name__}; expected a JSON array of entries")
    entries = []
    for index, record in enumerate(records[:limit]):
        answer = record.get("answer") if isinstance(record, dict) else None
        if isinstance(answer, list) and answer:
            answer = answer[0]
        if not (
            isinstance(record, dict)
            and isinstance(record.get("system"), str)
            and isinstance(record.get("user"), str)
            and isinstance(answer, dict)
            and "name" in answer
            and "parameters" in answer
        ):
            raise ApiBankDataError(
                f'{path} entry {index} is not a processed API-Bank entry: it needs "system" '
                'and "user" strings and an "answer" with "name" and "parameters"'
            )
        entries.append(
            ApiBankEntry(
                f"Level{level}_{index}",
                level,
                record["system"],
                record["user"],
                answer["name"],
                answer["parameters"],
            )
        )
    return entries


def prompt_of(entry: ApiBankEntry) -> Prompt:
    """The authors' messages: their system prompt and the user turn, no tools argument."""
    return Prompt(
        entry.id, [{"role": "system", "content": entry.system}, {"role": "user", "content": entry.user}]
    )


def extract_calls(text: str) -> list[Any]:
    """The JSON lines of the last `<tool_call>` block (see the module docstring)."""
    block = text.strip().split("<tool_call>")[-1].split("</tool_call>")[0]
    calls = []
    for line in block.strip().split("\n"):
        if not line.strip():
            continue
        try:
            calls.append(json.loads(line))
        except ValueError:
            continue
    return calls


def matches(calls: list[Any], name: str, parameters: Any) -> bool:
    """The authors' soft match: some call, scanned in order, equals the reference exactly."""
    for call in calls:
        if not isinstance(call, dict):
            return False  # the authors' loop raises here and stops scanning
        if "name" in call and "parameters" in call:
            called, arguments = call["name"], call["parameters"]
        else:
            called, arguments = name, call
        if called == name and arguments == parameters:
            return True
    return False


def judge(entry: ApiBankEntry, text: str) -> EntryResult:
    """One entry's verdict."""
    calls = extract_calls(text)
    if matches(calls, entry.name, entry.parameters):
        return EntryResult(entry.id, True, None, text)
    expected = json.dumps({"name": entry.name, "parameters": entry.parameters}, ensure_ascii=False)
    reason = (
        f"no JSON call found; expected {expected}"
        if not calls
        else f"no call equals the reference {expected}; got {json.dumps(calls, ensure_ascii=False)[:300]}"
    )
    return EntryResult(entry.id, False, reason, text)


def level_summary(results: dict[str, list[EntryResult]]) -> dict[str, Any]:
    """The authors' leaderboard numbers: per-level and micro-averaged overall accuracy in percent
    (2 places)."""
    out: dict[str, Any] = {}
    correct = total = 0
    for name, entries in results.items():
        right = sum(e.correct for e in entries)
        out[f"{name}_acc"] = round(right / len(entries) * 100, 2) if entries else 0
        correct, total = correct + right, total + len(entries)
    out["overall_acc"] = round(correct / total * 100, 2) if total else 0
    return out
