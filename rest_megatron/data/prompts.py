"""Prompt sources for the RL loop: a deterministic stream of task samples, batch by step.

`batch(step)` depends only on (seed, step), so a resumed run sees exactly the prompts an
uninterrupted run would have seen: the data cursor is the step number. Epochs are reshuffled with
`seed + epoch`. Sources:

- `tiny-task`: the synthetic calculator task (`tiny_task.py`), train and eval splits;
- a JSONL file in our format (`rest-megatron data prepare` writes it): one object per line with
  `messages` (the prompt), `tools` (JSON schemas) and `ground_truth` (`{"calls": [...], "answer": ...}`).
"""

from __future__ import annotations

import json
import random
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


def load_prompts(path: str, split: str, seed: int) -> list[Prompt]:
    """All prompts of `split` from `tiny-task` or a JSONL file (bad lines are reported together)."""
    if path == "tiny-task":
        samples = make_tiny_task(seed, TINY_TASK_SIZES[split], split)
        return [Prompt(s.messages, s.tools, {"calls": s.calls, "answer": s.answer}) for s in samples]
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"data file {source} not found; set data.train_path/eval_path to a JSONL file or tiny-task")
    prompts, errors = [], []
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            prompts.append(Prompt(record["messages"], record.get("tools", []), record.get("ground_truth", {})))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            errors.append(f"{source}:{number}: {type(error).__name__}: {error}")
    if errors:
        raise ValueError(f"{len(errors)} bad records (fix or drop them):\n" + "\n".join(errors[:20]))
    if not prompts:
        raise ValueError(f"{source} has no records")
    return prompts


class PromptStream:
    """Batches of prompts by step, reshuffled every epoch, identical across restarts."""

    def __init__(self, prompts: list[Prompt], *, batch_size: int, seed: int, shuffle: bool = True) -> None:
        if batch_size > len(prompts):
            raise ValueError(f"data.num_prompts_per_step={batch_size} exceeds the {len(prompts)} prompts available")
        self.prompts, self.batch_size, self.seed, self.shuffle = prompts, batch_size, seed, shuffle
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
