"""Reward of a multi-turn tool-use trajectory: format, calls and answer, ToolRL-style.

For tasks whose ground truth is `{"calls": [...], "answer": ...}` (the tiny task, prepared JSONL data),
scored over the assistant turns of one trajectory:

    R = format_weight · (+1 if every turn parses cleanly and, where calls are expected, the
                         trajectory made at least one; −1 otherwise)
      + call_weight   · (fraction of ground-truth calls matched, in order, by the calls made;
                         −1 when the trajectory made no call although calls were expected)
      + answer_weight · (1 if the final turn's answer matches, else 0)

Like ToolRL, a malformed call costs the format term, and so does answering without the tool call the
ground truth expects (ToolRL's format check demands a <tool_call> block exactly when the ground truth has
one). Without that, skipping the tools (format +1, calls −1) would outscore trying them and sometimes
malforming a call, and a weak policy learns to stop calling tools: measured on the tiny task, where
every seed of the 12-step recipe collapsed to no calls. Unlike ToolRL's single-turn reward, calls are
collected over all turns, because a multi-step question needs each call's result before the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_megatron.algo.function_match import call_matches, schemas_by_name
from rest_megatron.algo.rewards import answer_matches, register_reward
from rest_megatron.algo.tool_calls import parse_tool_calls


@register_reward("tool_trajectory")
def tool_trajectory_reward(
    response: str | Sequence[str],
    ground_truth: dict[str, Any],
    *,
    step: int = 0,
    tools: Sequence[dict[str, Any]] | None = None,
    format_weight: float = 1.0,
    call_weight: float = 1.0,
    answer_weight: float = 1.0,
) -> tuple[float, dict[str, float]]:
    """Score the assistant turns of one trajectory (a list of turn texts, or one text for one turn)."""
    turns = [response] if isinstance(response, str) else list(response)
    parsed = [parse_tool_calls(turn) for turn in turns]
    made = [call for p in parsed for call in p.calls]
    expected = list(ground_truth.get("calls", []))
    well_formed = bool(turns) and all(not p.errors for p in parsed) and bool(made or not expected)
    schemas = schemas_by_name(tools)
    matched = 0
    for predicted, wanted in zip(made, expected):
        if not call_matches(predicted, wanted, schemas.get(wanted["name"])):
            break
        matched += 1
    if expected:
        call_score = matched / len(expected) if made else -1.0
        call_score -= 0.25 * max(0, len(made) - len(expected)) / len(expected)  # extra calls cost a little
    else:
        call_score = 0.0 if not made else -1.0
    answer = parsed[-1].answer if parsed else None
    answer_ok = (
        "answer" in ground_truth and answer is not None and answer_matches(answer, ground_truth["answer"])
    )
    components = {"format": 1.0 if well_formed else -1.0, "calls": call_score, "answer": float(answer_ok)}
    total = (
        format_weight * components["format"] + call_weight * call_score + answer_weight * components["answer"]
    )
    return total, components
