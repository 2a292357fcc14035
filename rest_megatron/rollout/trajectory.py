"""A multi-turn trajectory: one growing list of token IDs with aligned per-token bookkeeping.

    token_ids   [ prompt ........ | assistant turn 1 | tool turn 1 | assistant turn 2 | ... ]
    logprobs    [ 0 ...........0  | sampling lps     | 0 ........0 | sampling lps     | ... ]
    loss_mask   [ 0 ...........0  | 1 ............ 1 | 0 ........0 | 1 ............ 1 | ... ]
    region_masks[ OTHER .........  | tagged per token | OTHER ..... | tagged per token | ... ]
    segments    [ (prompt, 0, P)  | (assistant,P,A1) | (tool,A1,T1)| ...                    ]

Every list is extended by ONE method, `append`, which checks that the lengths agree, so tokens,
logprobs, mask and regions can never drift apart (docs/style.md). Sampled
tokens are appended exactly as the server returned them; tool turns are new IDs with loss mask 0.
Earlier tokens are never re-tokenized or edited.

Trajectories round-trip through JSONL (`save_jsonl` / `load_jsonl`) so a rollout can be replayed
by the trainer without the inference servers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from rest_megatron.algo.regions import Region, region_bit

OTHER = region_bit(Region.OTHER)
SegmentKind = Literal["prompt", "assistant", "tool"]


class TrajectoryStatus(str, Enum):
    """Where a trajectory stands; everything but RUNNING is final."""

    RUNNING = "running"
    ANSWERED = "answered"  # the last assistant turn made no tool call (a final answer)
    MAX_TURNS = "max_turns"  # the assistant-turn budget ran out while it was still calling tools
    TRUNCATED = "truncated"  # a turn hit max_new_tokens, or the trajectory hit its total token cap
    FAILED = "failed"  # the rollout itself failed (no inference server); `errors` says why
    ABORTED = "aborted"  # the server aborted a generation (finish_reason "abort"); `finish_reason` says why


UNTRAINABLE = frozenset({TrajectoryStatus.FAILED, TrajectoryStatus.ABORTED})
"""Statuses whose tokens are masked out of the loss: what was sampled is not what the policy would do."""


@dataclass(frozen=True)
class Segment:
    """A contiguous span [start, end) of the token list and what produced it."""

    kind: SegmentKind
    start: int
    end: int
    turn: int
    """Assistant turn index this segment belongs to (the prompt is turn -1; a tool turn has the
    index of the assistant turn whose calls it answers)."""


@dataclass
class ToolCallRecord:
    """One tool call of an assistant turn, or one malformed call, and what the model was told."""

    turn: int
    name: str | None
    """None for a call that could not be parsed."""
    arguments: dict[str, Any] | None
    ok: bool
    output: str
    """The text the model saw in the tool turn."""
    error: str | None = None
    timed_out: bool = False
    duration_s: float = 0.0


@dataclass
class Trajectory:
    """Token IDs, sampling logprobs, loss mask and region masks of one sampled conversation."""

    sample_id: str
    """The request's label, opaque here. The trainer writes "<tag>-<prompt index>-<sample index>"
    (`trainer/rollout_stage.py`, tag `train` or `eval`); groups are formed by batch order, not by it."""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    region_masks: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The conversation as chat messages (assistant text decoded from the sampled IDs), for rewards
    and for reading; the token lists, not these, are what the trainer uses."""
    status: TrajectoryStatus = TrajectoryStatus.RUNNING
    finish_reason: str = ""
    """Why it ended, in words (e.g. "answer", "max_turns", "turn hit max_new_tokens")."""
    errors: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- the one way to grow a trajectory -------------------------------------------------
    def append(
        self,
        kind: SegmentKind,
        token_ids: Sequence[int],
        *,
        logprobs: Sequence[float] | None = None,
        region_masks: Sequence[int] | None = None,
        turn: int,
    ) -> Segment:
        """Append one segment. Assistant segments are trained on (loss mask 1) and need their
        sampling logprobs and region masks; prompt and tool segments get mask 0, logprob 0 and
        region OTHER."""
        assert self.status is TrajectoryStatus.RUNNING, f"append to a finished trajectory ({self.status})"
        n = len(token_ids)
        sampled = kind == "assistant"
        if sampled:
            assert logprobs is not None and region_masks is not None, (
                "sampled tokens need logprobs and regions"
            )
        else:
            assert logprobs is None and region_masks is None, "only sampled tokens carry logprobs and regions"
            assert kind != "prompt" or not self.token_ids, "the prompt comes first, once"
        lps = [float(x) for x in logprobs] if logprobs is not None else [0.0] * n
        regions = list(region_masks) if region_masks is not None else [OTHER] * n
        assert len(lps) == n and len(regions) == n, (
            f"{kind} segment: {n} tokens, {len(lps)} logprobs, {len(regions)} region masks"
        )
        start = len(self.token_ids)
        self.token_ids.extend(int(t) for t in token_ids)
        self.logprobs.extend(lps)
        self.loss_mask.extend([int(sampled)] * n)
        self.region_masks.extend(regions)
        segment = Segment(kind, start, start + n, turn)
        self.segments.append(segment)
        self.check()
        return segment

    def finish(self, status: TrajectoryStatus, reason: str) -> None:
        """Mark the trajectory final."""
        assert status is not TrajectoryStatus.RUNNING
        self.status, self.finish_reason = status, reason

    # ---- views ----------------------------------------------------------------------------
    @property
    def prompt_length(self) -> int:
        """Tokens of the prompt segment."""
        return self.segments[0].end if self.segments and self.segments[0].kind == "prompt" else 0

    @property
    def response_length(self) -> int:
        """Tokens after the prompt (all turns and tool results)."""
        return len(self.token_ids) - self.prompt_length

    @property
    def num_turns(self) -> int:
        """Assistant turns generated."""
        return sum(s.kind == "assistant" for s in self.segments)

    @property
    def num_sampled(self) -> int:
        """Tokens the policy sampled (the loss mask's sum)."""
        return sum(self.loss_mask)

    def check(self) -> None:
        """Assert the invariants: aligned lists, contiguous segments, mask 1 exactly on assistant spans."""
        n = len(self.token_ids)
        assert len(self.logprobs) == n and len(self.loss_mask) == n and len(self.region_masks) == n
        position = 0
        for segment in self.segments:
            assert segment.start == position and segment.end >= segment.start
            position = segment.end
        assert position == n, f"segments cover {position} of {n} tokens"

    # ---- replay ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the status as its string value)."""
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        """Inverse of `to_dict`; the invariants are checked."""
        data = dict(data)
        data["status"] = TrajectoryStatus(data["status"])
        data["segments"] = [Segment(**s) for s in data.get("segments", [])]
        data["tool_calls"] = [ToolCallRecord(**c) for c in data.get("tool_calls", [])]
        trajectory = cls(**data)
        trajectory.check()
        return trajectory


def save_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> None:
    """Write one trajectory per line (written to a temporary name first, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for trajectory in trajectories:
            out.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_jsonl(path: str | Path) -> list[Trajectory]:
    """Read trajectories written by `save_jsonl`."""
    out = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError, AssertionError) as exc:
                raise ValueError(
                    f"{path}:{number} is not a saved trajectory ({exc}); write it with save_jsonl"
                ) from exc
    return out
