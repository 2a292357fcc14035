"""What every inference client takes and returns, and the errors it raises.

The rollout speaks token IDs end to end (docs/design.md §7): a request is a list of prompt IDs and a
`SamplingParams`; a reply is a `Generation` with the sampled IDs exactly as sampled, one sampling
logprob per ID, and why the generation stopped. Clients for SGLang, vLLM and the embedded engine
all map their wire formats onto these types.

Errors:
- `ServerUnavailable`: the server could not be reached, answered 5xx, or did not answer in time,
  through all retries. The router takes such a server out of rotation and retries elsewhere.
- `BadServerReply`: the server answered, but refused the request (4xx) or sent something that is
  not the protocol. Retrying elsewhere would not help; the message says what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]
"""`stop`: a stop token (EOS or `stop_token_ids`) or stop string was sampled; `length`:
`max_new_tokens` (or the context length) was reached; `abort`: the server dropped the request."""


class InferenceError(RuntimeError):
    """Base class of inference-server failures."""


class ServerUnavailable(InferenceError):
    """Connection errors, 5xx answers or timeouts outlasted the retries (a router fails over)."""


class BadServerReply(InferenceError):
    """The server refused the request (4xx) or broke the protocol; the message says how."""


class WeightSyncError(InferenceError):
    """A server did not take the new weights; the message names the server and its reason."""


class RolloutFailed(RuntimeError):
    """Too many trajectories of a training step failed or were aborted (`rollout.max_failed_fraction`)."""


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Sampling settings of one generation request (SGLang's `sampling_params` subset)."""

    temperature: float = 1.0
    """Softmax temperature; 0 is greedy decoding."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]; 1 disables it."""
    top_k: int = -1
    """Sample among the k most likely tokens; -1 disables it."""
    max_new_tokens: int = 512
    """Tokens this request may generate."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token IDs that end generation (EOS always does, unless `ignore_eos`)."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks only)."""
    seed: int | None = None
    """Per-request sampling seed (SGLang's `sampling_seed`); None draws a fresh one."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed."""
        return SamplingParams(**{**self.__dict__, **changes})

    def to_sglang(self) -> dict[str, Any]:
        """The `sampling_params` object of SGLang's `/generate`."""
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            # Special tokens stay in the text: the rollout reads IDs, but a human reads the text.
            "skip_special_tokens": False,
        }
        if self.stop_token_ids:
            params["stop_token_ids"] = list(self.stop_token_ids)
        if self.ignore_eos:
            params["ignore_eos"] = True
        if self.seed is not None:
            params["sampling_seed"] = self.seed
        return params


@dataclass(frozen=True)
class Generation:
    """One generation: the sampled IDs, their sampling logprobs and why it stopped."""

    output_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    matched_stop: int | str | None = None
    """The stop token ID or stop string that ended it (None for `length`/`abort`, and for EOS on vLLM)."""
    server: str = ""
    """Base URL of the server that produced it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the server reported (latency, weight version), for metrics."""

    def __post_init__(self) -> None:
        if len(self.output_ids) != len(self.logprobs):
            raise BadServerReply(
                f"server {self.server or '?'} returned {len(self.output_ids)} token ids but "
                f"{len(self.logprobs)} logprobs; ask for logprobs of every output token"
            )
