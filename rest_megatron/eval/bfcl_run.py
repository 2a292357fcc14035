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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rest_megatron.algo.tool_calls import parse_tool_calls
from rest_megatron.eval.bfcl_data import MULTI_TURN, BfclEntry, tool_schemas
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


class BfclRunner:
    """Generates and scores entries against one inference client."""

    def __init__(self, client: InferenceClient, tokenizer: Any, settings: RunSettings) -> None:
        self.client = client
        self.settings = settings
        self.renderer = ChatRenderer(tokenizer)
        stops = tuple(sorted({*settings.sampling.stop_token_ids, self.renderer.end_of_turn_id}))
        self.sampling = settings.sampling.replace(stop_token_ids=stops)

    async def generate(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        """The assistant's text for a conversation (prompt rendered with the tools)."""
        generation = await self.client.generate(self.renderer.prompt_ids(messages, tools), self.sampling)
        return self.renderer.assistant_text(generation.output_ids)

    async def single_turn(self, entry: BfclEntry) -> EntryResult:
        """One generation, scored against the answer key."""
        text = await self.generate(list(entry.turns[0]), tool_schemas(entry.functions))
        reason = single_turn_mismatch(entry, text)
        return EntryResult(entry.id, reason is None, reason, text)

    async def multi_turn(self, entry: BfclEntry) -> EntryResult:
        """The conversation turn by turn, the model's calls executed, checked after each turn."""
        episode = MultiTurnEpisode(entry, call_timeout_s=self.settings.call_timeout_s)
        tools = tool_schemas(entry.functions)
        messages: list[dict[str, Any]] = []
        transcript: list[list[str]] = []
        for turn, user_messages in enumerate(entry.turns):
            messages += user_messages
            transcript.append([])
            for _ in range(self.settings.max_steps):
                text = await self.generate(messages, tools)
                transcript[-1].append(text)
                messages.append({"role": "assistant", "content": text})
                parsed = parse_tool_calls(text)
                if not parsed.calls:
                    break
                results = episode.execute(parsed.calls)
                results += [f"Error: {error.message}" for error in parsed.errors]
                messages += [{"role": "tool", "content": result} for result in results]
            else:
                reason = f"turn {turn}: still calling tools after {self.settings.max_steps} rounds"
                return EntryResult(entry.id, False, reason, transcript)
            reason = episode.end_turn(turn)
            if reason is not None:
                return EntryResult(entry.id, False, reason, transcript)
        return EntryResult(entry.id, True, None, transcript)

    async def run_entry(self, entry: BfclEntry) -> EntryResult:
        """One entry of any category; a refused request fails the entry instead of the run."""
        try:
            if entry.category in MULTI_TURN:
                return await self.multi_turn(entry)
            return await self.single_turn(entry)
        except BadServerReply as exc:
            return EntryResult(entry.id, False, f"inference failed: {exc}", None)

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
