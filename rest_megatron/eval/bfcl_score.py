"""BFCL verdicts: a model's text (or environment objects) in, a verdict and its reason out, by BFCL's own
code.

| category kind                      | judged by (bfcl-eval, see `bfcl_checker`)                             |
|------------------------------------|-----------------------------------------------------------------------|
| answer-key categories (simple,     | the handler's decoding, `is_function_calling_format_output`, then     |
| multiple, parallel, Java, JS, live)| `ast_checker` with the category's language                            |
| irrelevance, live_irrelevance      | correct when decoding fails or yields no call (`is_empty_output`)     |
| live_relevance                     | correct when at least one call decodes                                |
| multi_turn_*                       | after every turn with a ground truth: `state_checker`, then           |
|                                    | `response_checker` over all the model's results so far                |

Our own matcher (`rest_megatron.algo.function_match`) scores training rewards; `tests/eval/
test_function_match_vs_bfcl.py` holds it to BFCL's checker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rest_megatron.eval.bfcl_checker import ast_verdict, relevance_verdict
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
    score: float | None = None
    """A graded benchmark's score of the entry (ToolRL: the reward); None for pass/fail ones."""
    parts: dict[str, float] | None = None
    """The score's components (ToolRL: format, correctness)."""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."


def single_turn_mismatch(entry: BfclEntry, text: str, mode: str = "fc") -> str | None:
    """Why BFCL fails the model's text on a single-turn entry, or None if BFCL counts it correct.

    `mode` is how the model was prompted: "fc" (tools through the chat template, `<tool_call>` JSON
    replies) or "prompting" (BFCL's system prompt, Python-syntax call lists).
    """
    if entry.category in IRRELEVANCE | RELEVANCE:
        reason = relevance_verdict(entry.category, text, mode)
    else:
        assert entry.answer is not None, f"{entry.id}: answer-key categories carry an answer"
        reason = ast_verdict(entry.category, entry.checker_functions, text, entry.answer, mode)
    return None if reason is None else _clip(reason)


def summarize(results: Sequence[EntryResult]) -> dict[str, Any]:
    """{"total", "correct", "accuracy"} of one category (accuracy 0.0 for an empty one)."""
    correct = sum(r.correct for r in results)
    return {"total": len(results), "correct": correct, "accuracy": correct / len(results) if results else 0.0}
