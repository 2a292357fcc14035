"""The held-out ToolRL split scored with the authors' `toolrl` reward (`rest_megatron/algo/rewards.py`).

Input: any JSONL that `rest-megatron data prepare --format toolrl` writes (`data.jsonl`, or the held-out
`test.jsonl` of a split): records with `messages`, `tools` and `ground_truth.reference` (ToolRL's answer
string). Each prompt is rendered as the rollout renders it (messages and tools through the chat
template), one greedy reply is scored, and the report gives the mean reward and its parts and the
fraction of exact replies (format right and, where the reference calls tools, calls equal to it).
The reward's ranges follow ResT's schedule, so they depend on `--reward-step` (default 0, the
schedule's start); compare checkpoints at one step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rest_megatron.algo.curricula import evaluate
from rest_megatron.algo.rewards import TOOLRL_CORRECT_MAX, TOOLRL_FORMAT_MAX, get_reward
from rest_megatron.eval.bfcl_score import EntryResult
from rest_megatron.eval.single_turn import Prompt


class ToolRLDataError(ValueError):
    """The file is missing or its records are not prepared ToolRL records; the message names the fix."""


def load_records(path: str | Path, limit: int | None = None) -> list[tuple[Prompt, Any]]:
    """(prompt, ground truth) of the first `limit` records (all if None).

    Raises:
        ToolRLDataError: see the class.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolRLDataError(
            f"{path} does not exist; pass a JSONL written by `rest-megatron data prepare --format "
            "toolrl` (its data.jsonl, or test.jsonl of a --split)"
        )
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ToolRLDataError(f"{path}:{number} is not JSON ({exc})") from exc
        reference = (record.get("ground_truth") or {}).get("reference") if isinstance(record, dict) else None
        if not isinstance(reference, str) or not isinstance(record.get("messages"), list):
            raise ToolRLDataError(
                f"{path}:{number} is not a prepared ToolRL record (it needs messages and "
                "ground_truth.reference); prepare the data with `rest-megatron data prepare "
                "--format toolrl`"
            )
        out.append(
            (
                Prompt(
                    str(record.get("id", f"toolrl_{len(out)}")),
                    record["messages"],
                    record.get("tools") or None,
                ),
                record["ground_truth"],
            )
        )
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ToolRLDataError(f"{path} holds no records")
    return out


def judge(prompt: Prompt, text: str, ground_truth: Any, step: int) -> EntryResult:
    """The reward of one reply; correct when it is the best the reward gives at `step`."""
    reward, parts = get_reward("toolrl")(text, ground_truth, step=step, tools=prompt.tools)
    calls_expected = "<tool_call>" in ground_truth["reference"]
    exact = parts["format"] == evaluate(TOOLRL_FORMAT_MAX, step) and (
        not calls_expected or parts["correctness"] == evaluate(TOOLRL_CORRECT_MAX, step)
    )
    reason = (
        None
        if exact
        else f"reward {reward:.3f} (format {parts['format']:.3f}, correctness {parts['correctness']:.3f})"
    )
    return EntryResult(prompt.id, exact, reason, text, score=reward, parts=parts)


def reward_summary(results: list[EntryResult]) -> dict[str, float]:
    """Means of the reward and its parts."""
    n = max(len(results), 1)
    summary = {"reward_mean": sum(r.score or 0.0 for r in results) / n}
    for part in ("format", "correctness"):
        summary[f"{part}_mean"] = sum((r.parts or {}).get(part, 0.0) for r in results) / n
    return summary
