"""Prompt sources for the RL loop: a deterministic stream of task samples, batch by step.

`batch(step)` depends only on (seed, step), so a resumed run sees exactly the prompts an
uninterrupted run would have seen: the data cursor is the step number. Epochs are reshuffled with
`seed + epoch`. Sources:

- `tiny-task`: the synthetic calculator task (`tiny_task.py`), train and eval splits;
- a JSONL file in our format (`rest-megatron data prepare` writes it): one object per line with
  `messages` (the prompt), `tools` (JSON schemas), `ground_truth` (`{"calls": [...], "answer": ...}`)
  and optionally `render_tools: false` for data whose system prompt lists the tools itself (ToolRL).

Prompts longer than `data.max_prompt_tokens` once rendered are skipped, not cut (a cut tool schema is
a wrong task): `drop_long_prompts` returns how many, and the run logs it as `data/skipped_long_prompts`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rest_megatron.data.tiny_task import make_tiny_task

TINY_TASK_SIZES = {"train": 2048, "eval": 64}


@dataclass(frozen=True)
class Prompt:
    """One RL prompt: the chat messages, the tools offered, and what a correct trajectory does."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    ground_truth: dict[str, Any] = field(default_factory=dict)
    """{"calls": [{"name", "arguments"}, ...], "answer": str} (either may be absent)."""
    render_tools: bool = True
    """Pass `tools` to the chat template. False for data whose system prompt already lists the tools and
    asks for its own call format (ToolRL): the template would add a second, conflicting tool list."""

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        """The `tools=` argument of the chat template for this prompt."""
        return self.tools if self.render_tools else None


def load_prompts(path: str, split: str, seed: int) -> list[Prompt]:
    """All prompts of `split` from `tiny-task` or a JSONL file (bad lines are reported together)."""
    if path == "tiny-task":
        samples = make_tiny_task(seed, TINY_TASK_SIZES[split], split)
        return [Prompt(s.messages, s.tools, {"calls": s.calls, "answer": s.answer}) for s in samples]
    source = Path(path)
    if not source.is_file():
        raise ValueError(
            f"data file {source} not found; set data.train_path/eval_path to a JSONL file that "
            "`rest-megatron data prepare` wrote, or to tiny-task"
        )
    prompts, errors = [], []
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            prompts.append(
                Prompt(
                    record["messages"],
                    record.get("tools", []),
                    record.get("ground_truth", {}),
                    render_tools=bool(record.get("render_tools", True)),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            errors.append(f"{source}:{number}: {type(error).__name__}: {error}")
    if errors:
        raise ValueError(f"{len(errors)} bad records (fix or drop them):\n" + "\n".join(errors[:20]))
    if not prompts:
        raise ValueError(f"{source} has no records")
    return prompts


def drop_long_prompts(
    prompts: list[Prompt], count_tokens: Callable[[Prompt], int], max_tokens: int
) -> tuple[list[Prompt], int]:
    """(the prompts of at most `max_tokens` tokens as rendered by `count_tokens`, how many were dropped)."""
    kept = [p for p in prompts if count_tokens(p) <= max_tokens]
    if not kept:
        raise ValueError(
            f"every one of the {len(prompts)} prompts is longer than data.max_prompt_tokens="
            f"{max_tokens} tokens; raise data.max_prompt_tokens"
        )
    return kept, len(prompts) - len(kept)


class PromptStream:
    """Batches of prompts by step, reshuffled every epoch, identical across restarts."""

    def __init__(
        self,
        prompts: list[Prompt],
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        num_skipped_long: int = 0,
    ) -> None:
        if batch_size > len(prompts):
            raise ValueError(
                f"data.num_prompts_per_step={batch_size} exceeds the {len(prompts)} prompts available"
            )
        self.prompts, self.batch_size, self.seed, self.shuffle = prompts, batch_size, seed, shuffle
        self.num_skipped_long = num_skipped_long  # prompts of the source left out by `drop_long_prompts`
        self.steps_per_epoch = len(prompts) // batch_size

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return order

    def batch(self, step: int) -> list[Prompt]:
        """The prompts of training step `step` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        return [self.prompts[i] for i in order[index * self.batch_size : (index + 1) * self.batch_size]]
