"""Rule-based rewards, one float per trajectory, chosen by name.

A reward function takes plain Python data: the assistant's response (one text, or the list of the
trajectory's assistant turns), the task's ground truth and keyword parameters (`step` and the prompt's
`tools` are always passed), and returns `(reward, {component: float})`. It never raises on a bad
*response*; a malformed ground truth is a data error and raises ValueError.

Registered rewards and their ground truth:
- `toolrl`: ToolRL's rule reward (Qian et al. 2025, `verl/utils/reward_score/rlla.py` in ResT's code), with
  the ToolRL answer string as ground truth (`<think>…</think>` followed by `<tool_call>` lines of
  `{"name": …, "parameters": {…}}` and/or `<response>…</response>`), or a prepared record's ground truth
  holding it as `reference` (`rest-megatron data prepare --format toolrl`). ToolRL is single-turn: a
  multi-turn trajectory is scored on its first assistant turn.
- `function_match`: 1 if the calls of every turn match as structures (function_match.py), else 0; ground
  truth `{"calls": [{"name", "arguments"}, …], "tools": [schemas] (optional, else the prompt's),
  "ordered": bool (optional)}`.
- `answer_match`: 1 if the final answer (of the last turn) matches, else 0; ground truth a string or
  number, a list of acceptable ones, or a prepared record's ground truth with an `answer`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rest_megatron.algo.curricula import CurriculumSpec, Linear, evaluate
from rest_megatron.algo.function_match import calls_match
from rest_megatron.algo.registry import Registry
from rest_megatron.algo.tool_calls import ToolCall, parse_tool_calls


class RewardFn(Protocol):
    """fn(response, ground_truth, *, step=0, tools=None, **params) -> (reward, components)."""

    def __call__(
        self,
        response: str | Sequence[str],
        ground_truth: Any,
        *,
        step: int = 0,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> tuple[float, dict[str, float]]: ...


_REWARDS: Registry[RewardFn] = Registry("reward")
register_reward = _REWARDS.register
get_reward = _REWARDS.get
reward_names = _REWARDS.names


def as_turns(response: str | Sequence[str]) -> list[str]:
    """The assistant turns of a response given as one text or as a list of turn texts."""
    return [response] if isinstance(response, str) else list(response)


# ---------------------------------------------------------------------------------------------- ToolRL


def match_score(first: Sequence[str], second: Sequence[str]) -> float:
    """ToolRL's list similarity: 1 if equal (in order), else |A ∩ B| / |A ∪ B| on multisets (0 if one
    is empty)."""
    if list(first) == list(second):
        return 1.0
    if not first or not second:
        return 0.0
    a, b = Counter(first), Counter(second)
    common = sum((a & b).values())
    return common / (len(first) + len(second) - common)


def toolrl_format_ok(response: str, ground_truth: str) -> bool:
    """ToolRL's format rule: the tags the ground truth uses, each once, in think → tool_call → response
    order."""
    text = response.strip()
    want_response = "<response>" in ground_truth
    want_call = "<tool_call>" in ground_truth

    def positions(*tags: str) -> list[int] | None:
        found = [text.find(tag) for tag in tags]
        return None if min(found) < 0 else found

    if not want_response and not want_call:
        return text.count("<think>") == 1 and text.count("</think>") == 1
    tags = ["<think>", "</think>"]
    if want_call:
        tags += ["<tool_call>", "</tool_call>"]
    if want_response:
        tags += ["<response>", "</response>"]
    found = positions(*tags)
    if found is None or found != sorted(found) or len(set(found)) != len(found):
        return False
    if want_call and not (text.count("<tool_call>") == 1 and text.count("</tool_call>") == 1):
        return False
    if want_response and not (text.count("<response>") == 1 and text.count("</response>") == 1):
        return False
    # A call-only answer must not carry a response block.
    return want_response or ("<response>" not in text and "</response>" not in text)


def _ground_truth_calls(ground_truth: str) -> list[dict[str, Any]]:
    parsed = parse_tool_calls(ground_truth)
    if parsed.errors:
        raise ValueError(
            f"malformed ground-truth tool call: {parsed.errors[0].message}: {parsed.errors[0].raw!r}"
        )
    return [c.as_dict() for c in parsed.calls if c.block == 0]


def toolrl_call_score(
    gt_calls: Sequence[Mapping[str, Any]], pd_calls: Sequence[Mapping[str, Any]]
) -> tuple[float, float]:
    """(score, max score) of ToolRL's partial credit; an exact match is handled by the caller.

    score = match_score(names) + Σ over expected calls of the best unused same-name prediction's
            match_score(parameter names) + #(parameters with equal values);
    max   = 1 + Σ over expected calls of (1 + #parameters).
    """
    score = match_score([c["name"] for c in gt_calls], [c["name"] for c in pd_calls])
    max_score = 1.0
    used: set[int] = set()
    for gt in gt_calls:
        gt_args = gt["arguments"]
        max_score += 1.0 + len(gt_args)
        best, best_index = 0.0, -1
        for i, pd in enumerate(pd_calls):
            if i in used or pd["name"] != gt["name"]:
                continue
            pd_args = pd["arguments"]
            total = match_score(list(gt_args), list(pd_args))
            total += sum(1.0 for k, v in gt_args.items() if k in pd_args and pd_args[k] == v)
            if total > best:  # strictly better, so the first of equal candidates wins (as in rlla.py)
                best, best_index = total, i
        if best_index >= 0:
            used.add(best_index)
            score += best
    return score, max_score


# The SCHEDULEREWARD ranges of rlla.py with its defaults (format max 1, min 0; correctness ±3), s = step:
#   format max  2 − s/150, floored at 1      format min  −2 + 2s/150, capped at −1 (reached at s = 75)
#   correct max 2 + s/150, capped at 3       correct min −2 − s/150, floored at −3
# i.e. format [−2, 2] → [−1, 1] and correctness [−2, 2] → [−3, 3] over 150 steps.
TOOLRL_FORMAT_MAX = Linear(start=2.0, slope=-1.0 / 150, cap=1.0)
TOOLRL_FORMAT_MIN = Linear(start=-2.0, slope=2.0 / 150, cap=-1.0)
TOOLRL_CORRECT_MAX = Linear(start=2.0, slope=1.0 / 150, cap=3.0)
TOOLRL_CORRECT_MIN = Linear(start=-2.0, slope=-1.0 / 150, cap=-3.0)


@register_reward("toolrl")
def toolrl_reward(
    response: str | Sequence[str],
    ground_truth: str | Mapping[str, Any],
    *,
    step: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
    format_max: CurriculumSpec = TOOLRL_FORMAT_MAX,
    format_min: CurriculumSpec = TOOLRL_FORMAT_MIN,
    correct_max: CurriculumSpec = TOOLRL_CORRECT_MAX,
    correct_min: CurriculumSpec = TOOLRL_CORRECT_MIN,
    accept_arguments: bool = True,
    step_origin: int = 0,
) -> tuple[float, dict[str, float]]:
    """ToolRL reward = format + correctness, with the ranges scheduled as ResT trains (SCHEDULEREWARD=1).

    `accept_arguments`: True takes a predicted call's arguments under "arguments" as well as
    "parameters". False is rlla.py's rule (the paper recipes set it): only "parameters" counts, so a
    call that writes "arguments" (or neither) is never an exact match, and makes the correctness
    correct_min(s) as soon as its name is an expected call's (rlla.py reads `pd_tool["parameters"]` for
    such a call and its KeyError scores the minimum); with any other name it only costs its share of
    the partial credit.
    `step_origin`: the schedules are evaluated at s = step + step_origin. The ResT authors' verl counter
    calls the first RL step 1 (our `step` counts from 0), so the paper recipes set 1.

    format      = format_max(s) if `toolrl_format_ok` else format_min(s).
    correctness = 0 when the ground truth has no tool call; else, with the predicted calls of the first
                  <tool_call> block: correct_min(s) if there is no block or the block is unclosed or any call
                  in it is malformed; correct_max(s) if the calls equal the expected ones exactly; otherwise
                  (max − min)·score/max_score + min with ToolRL's partial credit (`toolrl_call_score`).
    For the unscheduled ToolRL reward pass constants: format 1/0, correctness 3/−3.

    Differences from rlla.py, all lenient and all about parsing: "arguments" is accepted for
    "parameters" unless `accept_arguments` is False, blank lines and whole-block JSON lists inside the
    block are tolerated, and text inside <think> is never a call.
    """
    if isinstance(ground_truth, Mapping):
        ground_truth = ground_truth.get("reference")
    if not isinstance(ground_truth, str):
        raise ValueError(
            "toolrl ground truth is ToolRL's answer string, or a record prepared by `rest-megatron data "
            "prepare --format toolrl` (it keeps that string as ground_truth.reference)"
        )
    turns = as_turns(response)
    response = turns[0] if turns else ""
    step = step + step_origin
    f_max, f_min = evaluate(format_max, step), evaluate(format_min, step)
    c_max, c_min = evaluate(correct_max, step), evaluate(correct_min, step)
    fmt = f_max if toolrl_format_ok(response, ground_truth) else f_min

    if "<tool_call>" not in ground_truth:
        correctness = 0.0
    else:
        gt_calls = _ground_truth_calls(ground_truth)
        parsed = parse_tool_calls(response.strip())
        first_block_errors = [e for e in parsed.errors if e.block == 0]
        predicted = [c for c in parsed.calls if c.block == 0]
        pd_calls = [c.as_dict() for c in predicted]
        wrong_key = [] if accept_arguments else [c.name for c in predicted if c.arguments_key != "parameters"]
        if parsed.num_blocks == 0 or first_block_errors or {g["name"] for g in gt_calls} & set(wrong_key):
            correctness = c_min
        elif pd_calls == gt_calls and not wrong_key:
            correctness = c_max
        else:
            score, max_score = toolrl_call_score(gt_calls, pd_calls)
            correctness = (c_max - c_min) * score / max_score + c_min
    return fmt + correctness, {"format": fmt, "correctness": correctness}


# -------------------------------------------------------------------------------------- function match


@register_reward("function_match")
def function_match_reward(
    response: str | Sequence[str],
    ground_truth: Mapping[str, Any],
    *,
    step: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[float, dict[str, float]]:
    """1.0 when the calls of all turns match ground_truth["calls"] and no call is malformed, else 0.0."""
    if not isinstance(ground_truth, Mapping) or "calls" not in ground_truth:
        raise ValueError('function_match ground truth is {"calls": [...], "tools": [...], "ordered": bool}')
    parsed = [parse_tool_calls(turn) for turn in as_turns(response)]
    made = [call for p in parsed for call in p.calls]
    num_errors = sum(len(p.errors) for p in parsed)
    expected = [c if isinstance(c, ToolCall) else dict(c) for c in ground_truth["calls"]]
    ok = not num_errors and calls_match(
        made,
        expected,
        tools=ground_truth.get("tools") or tools,
        ordered=bool(ground_truth.get("ordered", False)),
    )
    return float(ok), {"match": float(ok), "num_calls": float(len(made)), "num_errors": float(num_errors)}


# ---------------------------------------------------------------------------------------- answer match

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _number(text: str) -> float | None:
    """The last number in `text` (thousands separators and a currency or percent sign tolerated)."""
    found = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))
    if not found:
        return None
    try:
        value = float(found[-1])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def answer_matches(predicted: str, expected: str | int | float) -> bool:
    """A numeric expectation (a number, or a string that is one number): the last number in the prediction
    within rel 1e-6. Otherwise normalized string equality (`normalize_answer`). Numbers never go through the
    string normalization, which drops the decimal point ("4.2" and "42" would collide)."""
    if isinstance(expected, bool):
        expected = str(expected)
    target: float | None
    if isinstance(expected, (int, float)):
        target = float(expected)
    else:
        compact = re.sub(r"(?<=\d),(?=\d{3})", "", expected.strip())
        target = _number(compact) if _NUMBER.fullmatch(compact) else None
    if target is None:
        return normalize_answer(predicted) == normalize_answer(str(expected))
    value = _number(predicted)
    return value is not None and math.isclose(value, target, rel_tol=1e-6, abs_tol=1e-9)


@register_reward("answer_match")
def answer_match_reward(
    response: str | Sequence[str],
    ground_truth: str | int | float | Sequence[str | int | float] | Mapping[str, Any],
    *,
    step: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[float, dict[str, float]]:
    """1.0 when the final answer matches any accepted answer, else 0.0.

    The final answer is the last `\\boxed{…}` of the last turn if there is one, else its parsed answer
    (`<response>` content or the text outside think and tool calls, see tool_calls.py).
    """
    if isinstance(ground_truth, Mapping):
        ground_truth = ground_truth.get("answer", [])
    turns = as_turns(response)
    response = turns[-1] if turns else ""
    accepted = list(ground_truth) if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    if not accepted or not all(isinstance(a, (str, int, float)) for a in accepted):
        raise ValueError(
            f"answer_match ground truth is a string/number or a list of them, got {ground_truth!r}"
        )
    boxed = _BOXED.findall(response)
    answer = boxed[-1] if boxed else parse_tool_calls(response).answer
    ok = answer is not None and any(answer_matches(answer, a) for a in accepted)
    return float(ok), {"match": float(ok), "has_answer": float(answer is not None)}


# Rewards defined in their own modules register on import; import them here so `get_reward` sees them.
from rest_megatron.algo import trajectory_reward as _trajectory_reward  # noqa: E402,F401
