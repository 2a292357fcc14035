"""One generation per prompt through an inference client, judged as it finishes (API-Bank, ToolRL held-out).

BFCL has its own runner (`bfcl_run.py`) because of its modes and multi-turn environments; the benchmarks
here are one system + user prompt and one reply each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rest_megatron.eval.bfcl_score import EntryResult
from rest_megatron.eval.report import Progress
from rest_megatron.rollout.chat import ChatRenderer
from rest_megatron.rollout.clients.base import InferenceClient
from rest_megatron.rollout.types import BadServerReply, SamplingParams


@dataclass(frozen=True)
class Prompt:
    """One entry to generate for."""

    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    """Passed to the chat template's `tools` (None: the template gets no tools argument)."""


Judge = Callable[[Prompt, str], EntryResult]
"""The verdict on one reply (a pure function of the prompt and the model's text)."""


async def run_prompts(
    client: InferenceClient,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    sampling: SamplingParams,
    judge: Judge,
    *,
    label: str,
    concurrency: int = 8,
) -> list[EntryResult]:
    """Generate and judge every prompt, `concurrency` at a time, results in prompt order, with progress lines.

    Raises:
        InferenceError: the server failed or refused a request (never scored as a wrong answer).
    """
    renderer = ChatRenderer(tokenizer)
    sampling = sampling.replace(
        stop_token_ids=tuple(sorted({*sampling.stop_token_ids, renderer.end_of_turn_id}))
    )
    progress = Progress(label, len(prompts))
    limit = asyncio.Semaphore(concurrency)

    async def one(prompt: Prompt) -> EntryResult:
        async with limit:
            try:
                generation = await client.generate(
                    renderer.prompt_ids(prompt.messages, prompt.tools), sampling
                )
            except BadServerReply as exc:
                raise BadServerReply(
                    f"entry {prompt.id}: the server refused the request ({exc}); nothing was "
                    "scored (a refusal is not a wrong answer)"
                ) from exc
        result = judge(prompt, renderer.assistant_text(generation.output_ids))
        progress.update(result.correct)
        return result

    return list(await asyncio.gather(*(one(prompt) for prompt in prompts)))
