"""Generation for BFCL: prompts through an inference server, a verdict per entry.

    entry ──chat template + tool schemas──► ids ──/generate──► text ──► bfcl_score verdict
    multi-turn, per user turn:
        generate ─► parse calls ─► execute (bfcl_env, in-process) ─► tool messages ─┐
           ▲    (no call: the turn is over; at most max_steps rounds)              │
           └───────────────────────────────────────────────────────────────────────┘
        then the turn's ground truth and BFCL's checks; the first failing turn ends the entry

Entries run concurrently (the server batches them). Each round renders the whole conversation with the
chat template: an evaluation needs no token-exact trajectory, so nothing here appends token IDs.
A request the server refuses (e.g. a prompt longer than its context) fails that entry with the reason;
an unreachable server ends the run (`ServerUnavailable` propagates).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rest_megatron.eval.bfcl_checker import bfcl, multi_turn_decode
from rest_megatron.eval.bfcl_data import MULTI_TURN, BfclEntry
from rest_megatron.eval.bfcl_env import MultiTurnEpisode
from rest_megatron.eval.bfcl_score import EntryResult, single_turn_mismatch
from rest_megatron.eval.report import Progress
from rest_megatron.rollout.chat import ChatRenderer
from rest_megatron.rollout.clients.base import InferenceClient
from rest_megatron.rollout.types import BadServerReply, SamplingParams


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How entries are generated."""

    sampling: SamplingParams
    """Per-request sampling (greedy by default on the command line)."""
    concurrency: int = 8
    """Entries in flight at once."""
    max_steps: int = 20
    """Model rounds per multi-turn user turn (BFCL's limit); an entry still calling tools after them fails."""
    call_timeout_s: float = 10.0
    """Wall-clock limit of one environment call in multi-turn entries."""
    mode: str = "fc"
    """"fc": the docs go to the chat template's `tools` and replies are `<tool_call>` JSON (BFCL's Qwen
    FC handler); "prompting": BFCL's default system prompt lists the docs and replies are Python call
    lists."""


def prompting_messages(
    messages: list[dict[str, Any]], functions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """BFCL's prompting mode (`system_prompt_pre_processing_chat_model` with its default format: Python call
    lists, JSON docs, plain text, classic style): the system prompt first, an existing one appended to it."""
    prompts = bfcl().default_prompts
    style = prompts.PROMPT_STYLE_TEMPLATES["classic"]
    system = prompts.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"],
        task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(
            output_format=prompts.OUTPUT_FORMAT_MAPPING["python"],
            param_types=prompts.PARAM_TYPE_MAPPING["python"],
        ),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(
            format="json", functions=json.dumps(functions, indent=4)
        ),
    )
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": system + "\n\n" + messages[0]["content"]}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


class BfclRunner:
    """Generates and scores entries against one inference client."""

    def __init__(self, client: InferenceClient, tokenizer: Any, settings: RunSettings) -> None:
        self.client = client
        self.settings = settings
        self.renderer = ChatRenderer(tokenizer)
        stops = tuple(sorted({*settings.sampling.stop_token_ids, self.renderer.end_of_turn_id}))
        self.sampling = settings.sampling.replace(stop_token_ids=stops)

    async def generate(self, messages: list[dict[str, Any]], functions: list[dict[str, Any]]) -> str:
        """The assistant's text for a conversation, the functions shown as the mode shows them."""
        if self.settings.mode == "prompting":
            messages, tools = prompting_messages(messages, functions), None
        else:
            tools = functions  # BFCL's Qwen FC handler writes each doc as it is (`json.dumps(doc)`)
        generation = await self.client.generate(self.renderer.prompt_ids(messages, tools), self.sampling)
        return self.renderer.assistant_text(generation.output_ids)

    async def single_turn(self, entry: BfclEntry) -> EntryResult:
        """One generation, scored against the answer key."""
        text = await self.generate(list(entry.turns[0]), entry.functions)
        reason = single_turn_mismatch(entry, text, self.settings.mode)
        return EntryResult(entry.id, reason is None, reason, text)

    async def multi_turn(self, entry: BfclEntry) -> EntryResult:
        """The conversation turn by turn, the model's calls executed, checked after each turn."""
        episode = MultiTurnEpisode(entry, call_timeout_s=self.settings.call_timeout_s)
        functions = list(entry.functions)
        held_out = entry.extra.get("missed_function", {})
        messages: list[dict[str, Any]] = []
        transcript: list[list[str]] = []
        for turn, user_messages in enumerate(entry.turns):
            if str(turn) in held_out:  # BFCL's miss_func: the held-out docs arrive with a fixed user message
                functions += held_out[str(turn)]
                user_messages = [
                    {
                        "role": "user",
                        "content": bfcl().default_prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
                    }
                ]
            messages += user_messages
            transcript.append([])
            for _ in range(self.settings.max_steps):
                text = await self.generate(messages, functions)
                transcript[-1].append(text)
                messages.append({"role": "assistant", "content": text})
                calls = multi_turn_decode(text, self.settings.mode)
                if not calls:
                    break
                results = episode.execute(calls)
                messages += [{"role": "tool", "content": result} for result in results]
            else:
                reason = f"turn {turn}: still calling tools after {self.settings.max_steps} rounds"
                return EntryResult(entry.id, False, reason, transcript)
            reason = episode.end_turn(turn)
            if reason is not None:
                return EntryResult(entry.id, False, reason, transcript)
        return EntryResult(entry.id, True, None, transcript)

    async def run_entry(self, entry: BfclEntry) -> EntryResult:
        """One entry of any category. An HTTP error is never a wrong answer: it ends the run
        (`InferenceError` propagates, naming the entry)."""
        try:
            if entry.category in MULTI_TURN:
                return await self.multi_turn(entry)
            return await self.single_turn(entry)
        except BadServerReply as exc:
            raise BadServerReply(
                f"entry {entry.id}: the server refused the request ({exc}); nothing was "
                "scored (a refusal is not a wrong answer)"
            ) from exc

    async def run_category(self, category: str, entries: Sequence[BfclEntry]) -> list[EntryResult]:
        """All entries of a category, `concurrency` at a time, results in entry order, with progress lines."""
        progress = Progress(f"bfcl {category}", len(entries))
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(entry: BfclEntry) -> EntryResult:
            async with limit:
                result = await self.run_entry(entry)
            progress.update(result.correct)
            return result

        return list(await asyncio.gather(*(one(entry) for entry in entries)))
