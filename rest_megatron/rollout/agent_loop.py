"""The multi-turn agent loop: many trajectories in flight, each advancing on its own.

    prompt ──render──► ids ──► generate ──► parse tool calls ──► run tools (concurrently)
                                  ▲                                      │
                                  └──── append tool turn ids (mask 0) ◄──┘
    stop on: an answer (no call) │ max_turns │ max_total_tokens │ a turn cut by max_new_tokens

Each trajectory is its own asyncio task: while one waits for its tools, the others generate. There
is no barrier between turns; the inference server batches whatever requests are in flight. A
trajectory that cannot reach any inference server ends FAILED with the reason in `errors` instead of
taking the batch down; the caller decides whether to drop it or stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rest_megatron.algo.region_tagger import RegionTagger
from rest_megatron.algo.tool_calls import parse_tool_calls
from rest_megatron.rollout.chat import ChatRenderer
from rest_megatron.rollout.clients.base import InferenceClient
from rest_megatron.rollout.tools import ToolExecutor, execute_turn, tool_names
from rest_megatron.rollout.trajectory import Trajectory, TrajectoryStatus
from rest_megatron.rollout.types import InferenceError, SamplingParams


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """Limits and sampling of the agent loop."""

    sampling: SamplingParams
    """Per-turn sampling (`max_new_tokens` is the per-turn cap)."""
    max_turns: int = 4
    """Assistant turns per trajectory."""
    max_total_tokens: int = 2048
    """Cap on tokens after the prompt: every turn and tool result (`data.max_response_tokens`)."""
    tool_timeout_s: float = 30.0
    """Wall-clock limit of one tool call (`sandbox.wall_seconds`)."""
    max_concurrency: int = 512
    """Trajectories in flight at once in `run_batch`."""
    stateful_tools: bool = False
    """Give each trajectory its own sandbox session (BFCL-style environments whose state persists
    between calls), configured by the prompt's `metadata["tool_config"]`."""

    def __post_init__(self) -> None:
        if (
            self.max_turns < 1
            or self.max_total_tokens < 1
            or self.tool_timeout_s <= 0
            or self.max_concurrency < 1
        ):
            raise ValueError(
                "max_turns, max_total_tokens, max_concurrency must be >= 1 and tool_timeout_s > 0"
            )

    @classmethod
    def from_config(cls, config: Any) -> AgentSettings:
        """From a `rest_megatron.config.Config` (rollout, data and sandbox sections)."""
        rollout = config.rollout
        sampling = SamplingParams(
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k,
            max_new_tokens=rollout.max_new_tokens,
        )
        return cls(
            sampling=sampling,
            max_turns=rollout.max_turns,
            max_total_tokens=config.data.max_response_tokens,
            tool_timeout_s=config.sandbox.wall_seconds,
        )


@dataclass(frozen=True)
class RolloutPrompt:
    """One prompt to sample: its chat messages and the tool schemas offered to the model."""

    sample_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    """Sampling seed of the first turn (turn k uses seed + k), so a resumed run samples what the
    uninterrupted one would; None lets the server draw one."""
    render_tools: bool = True
    """Give `tools` to the chat template (`data.prompts.Prompt.render_tools`); the sandbox gets them
    anyway."""

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        return self.tools if self.render_tools else None


class AgentLoop:
    """Runs trajectories against an inference client (a server or a router) and a tool executor."""

    def __init__(
        self,
        client: InferenceClient,
        tokenizer: Any,
        executor: ToolExecutor,
        settings: AgentSettings,
        *,
        end_of_turn_token: str | None = None,
    ) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.executor = executor
        self.settings = settings
        self.renderer = ChatRenderer(tokenizer, end_of_turn_token=end_of_turn_token)
        # The end-of-turn token always stops a turn, even for models whose EOS is another token.
        stops = tuple(sorted({*settings.sampling.stop_token_ids, self.renderer.end_of_turn_id}))
        self.sampling = settings.sampling.replace(stop_token_ids=stops)

    async def run(self, prompt: RolloutPrompt) -> Trajectory:
        """Sample one trajectory to the end."""
        started = time.perf_counter()
        trajectory = Trajectory(
            sample_id=prompt.sample_id,
            messages=list(prompt.messages),
            metadata={
                **prompt.metadata,
                "weight_versions": [],
                "servers": [],
                "timeline": [],
                "started_at": started,
            },
        )
        allowed = tool_names(prompt.tools)
        try:
            trajectory.append(
                "prompt", self.renderer.prompt_ids(prompt.messages, prompt.template_tools), turn=-1
            )
            tagger = RegionTagger(
                self.tokenizer,
                think_open_at_start=self.renderer.think_open_at_start(prompt.messages, prompt.template_tools),
            )
            session = None
            if self.settings.stateful_tools:
                try:
                    session = await self._open_session(allowed, prompt)
                except Exception as exc:  # noqa: BLE001 - no environment: this trajectory cannot run
                    trajectory.errors.append(f"tool session: {type(exc).__name__}: {exc}")
                    trajectory.finish(TrajectoryStatus.FAILED, "tool session failed")
                    return self._stamp(trajectory, started)
            try:
                await self._turns(trajectory, prompt, tagger, allowed, session)
            finally:
                if session is not None:
                    await self.executor.close_session(session)
        except InferenceError as exc:
            trajectory.errors.append(f"{type(exc).__name__}: {exc}")
            trajectory.finish(TrajectoryStatus.FAILED, "inference failed")
        return self._stamp(trajectory, started)

    @staticmethod
    def _stamp(trajectory: Trajectory, started: float) -> Trajectory:
        trajectory.metadata["finished_at"] = time.perf_counter()
        trajectory.metadata["duration_s"] = trajectory.metadata["finished_at"] - started
        return trajectory

    @staticmethod
    def _since(trajectory: Trajectory) -> float:
        return time.perf_counter() - trajectory.metadata["started_at"]

    async def _open_session(self, allowed: list[str], prompt: RolloutPrompt) -> str:
        if not hasattr(self.executor, "create_session"):
            raise ValueError("stateful_tools needs an executor with sessions (tools_sandbox's SandboxClient)")
        return await self.executor.create_session(allowed, config=prompt.metadata.get("tool_config"))

    async def _turns(
        self,
        trajectory: Trajectory,
        prompt: RolloutPrompt,
        tagger: RegionTagger,
        allowed: list[str],
        session: str | None,
    ) -> None:
        settings = self.settings
        for turn in range(settings.max_turns):
            budget = settings.max_total_tokens - trajectory.response_length
            if budget <= 0:
                trajectory.finish(TrajectoryStatus.TRUNCATED, "max_total_tokens")
                return
            params = self.sampling.replace(
                max_new_tokens=min(self.sampling.max_new_tokens, budget),
                seed=None if prompt.seed is None else prompt.seed + turn,
            )
            # Per turn: seconds since the trajectory started when generation and tools began/ended.
            timing = {"generate": [self._since(trajectory)]}
            trajectory.metadata["timeline"].append(timing)
            generation = await self.client.generate(trajectory.token_ids, params)
            timing["generate"].append(self._since(trajectory))
            trajectory.metadata["weight_versions"].append(generation.extra.get("weight_version"))
            trajectory.metadata["servers"].append(generation.server)
            tagger.start_turn()
            regions = tagger.feed(generation.output_ids, end_of_turn=True)
            trajectory.append(
                "assistant",
                generation.output_ids,
                logprobs=generation.logprobs,
                region_masks=regions,
                turn=turn,
            )
            text = self.renderer.assistant_text(generation.output_ids)
            trajectory.messages.append({"role": "assistant", "content": text})
            if generation.finish_reason == "abort":
                trajectory.finish(TrajectoryStatus.ABORTED, f"turn {turn} aborted by {generation.server}")
                return
            if generation.finish_reason != "stop":
                reason = (
                    "max_total_tokens"
                    if params.max_new_tokens < self.sampling.max_new_tokens
                    else "max_new_tokens"
                )
                trajectory.finish(
                    TrajectoryStatus.TRUNCATED, f"turn {turn} {generation.finish_reason}: {reason}"
                )
                return
            parsed = parse_tool_calls(text)
            if not parsed.calls and not parsed.errors:
                trajectory.finish(TrajectoryStatus.ANSWERED, "answer")
                return
            if turn == settings.max_turns - 1:
                trajectory.finish(TrajectoryStatus.MAX_TURNS, "max_turns")
                return
            timing["tools"] = [self._since(trajectory)]
            tool_messages, records = await execute_turn(
                self.executor,
                parsed,
                allowed=allowed,
                turn=turn,
                timeout_s=settings.tool_timeout_s,
                session_id=session,
                errors=trajectory.errors,
            )
            timing["tools"].append(self._since(trajectory))
            trajectory.tool_calls.extend(records)
            ended = bool(generation.output_ids) and generation.output_ids[-1] == self.renderer.end_of_turn_id
            ids = self.renderer.tool_turn_ids(
                trajectory.messages, tool_messages, prompt.template_tools, ended_with_end_of_turn=ended
            )
            if trajectory.response_length + len(ids) >= settings.max_total_tokens:
                trajectory.finish(TrajectoryStatus.TRUNCATED, "max_total_tokens")
                return
            trajectory.append("tool", ids, turn=turn)
            trajectory.messages.extend(tool_messages)

    async def run_batch(self, prompts: Sequence[RolloutPrompt]) -> list[Trajectory]:
        """Sample every prompt concurrently (at most `max_concurrency` at once); results in input order."""
        limit = asyncio.Semaphore(self.settings.max_concurrency)

        async def one(prompt: RolloutPrompt) -> Trajectory:
            async with limit:
                return await self.run(prompt)

        return list(await asyncio.gather(*(one(p) for p in prompts)))
