"""BFCL scoring as pure functions: a model's text (or environment objects) in, a verdict and its reason out.

| category kind                    | correct when                                                          |
|----------------------------------|-----------------------------------------------------------------------|
| simple, multiple (live too)      | exactly the answer key's one call (`allowed_calls_mismatch`)          |
| parallel, parallel_multiple      | the answer key's calls, paired one-to-one in any order                |
| irrelevance, live_irrelevance    | no well-formed call (a malformed one counts as none, as in BFCL)      |
| live_relevance                   | at least one well-formed call                                         |
| multi_turn_base                  | after every turn: same environment state as the ground truth, and the |
|                                  | turn's ground-truth results among the model's results so far          |

Value rules (types, lenient strings, optional arguments) are in `rest_megatron.algo.function_match`.
Where the answer-key categories meet a malformed `<tool_call>` block, the entry fails even if other
calls parse: BFCL would fail to decode the whole output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rest_megatron.algo.function_match import allowed_calls_mismatch
from rest_megatron.algo.tool_calls import parse_tool_calls
from rest_megatron.eval.bfcl_data import IRRELEVANCE, RELEVANCE, BfclEntry

_MAX_REASON_CHARS = 600


@dataclass
class EntryResult:
    """One entry's verdict, for the report."""

    id: str
    correct: bool
    reason: str | None
    """Why it failed (None when correct)."""
    output: Any
    """The model's text; for multi-turn, per turn the list of step texts."""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."


def single_turn_mismatch(entry: BfclEntry, text: str) -> str | None:
    """Why the model's text fails a single-turn entry, or None if it is correct."""
    parsed = parse_tool_calls(text)
    names = ", ".join(call.name for call in parsed.calls)
    if entry.category in IRRELEVANCE:
        return f"called {names} although no function fits" if parsed.calls else None
    if entry.category in RELEVANCE:
        if parsed.calls:
            return None
        return "no tool call" + (f" (malformed: {parsed.errors[0].message})" if parsed.errors else "")
    if parsed.errors:
        return f"malformed tool call: {parsed.errors[0].message}"
    if not parsed.calls:
        return "no tool call"
    assert entry.answer is not None, f"{entry.id}: answer-key categories carry an answer"
    reason = allowed_calls_mismatch(parsed.calls, entry.answer, tools=entry.functions)
    return None if reason is None else _clip(reason)


def public_state(instance: Any) -> dict[str, Any]:
    """The attributes BFCL compares: every instance attribute whose name does not start with "_"."""
    return {key: value for key, value in vars(instance).items() if not key.startswith("_")}


def state_mismatch(model: Mapping[str, Any], truth: Mapping[str, Any]) -> str | None:
    """Which class and attributes differ between the model's environment and the ground truth's, or None."""
    for name, expected in truth.items():
        actual = public_state(model[name])
        differing = [key for key, value in public_state(expected).items() if actual.get(key) != value]
        if differing:
            return _clip(f"{name} state differs from the ground truth in {', '.join(differing)}")
    return None


def response_mismatch(model_results: Sequence[str], truth_results: Sequence[str]) -> str | None:
    """Which ground-truth results are missing from the model's results (a multiset check, any order), or None."""
    missing = Counter(truth_results) - Counter(model_results)
    if not missing:
        return None
    return _clip(f"{sum(missing.values())} ground-truth result(s) never produced, e.g. {next(iter(missing))!r}")


def summarize(results: Sequence[EntryResult]) -> dict[str, Any]:
    """{"total", "correct", "accuracy"} of one category (accuracy 0.0 for an empty one)."""
    correct = sum(r.correct for r in results)
    return {"total": len(results), "correct": correct, "accuracy": correct / len(results) if results else 0.0}
