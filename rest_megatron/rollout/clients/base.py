"""The interface every inference client implements (SGLang, vLLM, the embedded engine, the router)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rest_megatron.rollout.types import Generation, SamplingParams


@runtime_checkable
class InferenceClient(Protocol):
    """Token-in/token-out generation plus the weight-sync calls the trainer needs."""

    base_url: str

    async def generate(self, input_ids: Sequence[int], params: SamplingParams) -> Generation:
        """Sample a continuation of `input_ids`; every sampled id comes with its sampling logprob."""
        ...

    async def health(self) -> bool:
        """True if the server answers GET /health with 200."""
        ...

    async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> None:
        """Make the server load the Hugging Face folder `model_path`; raise WeightSyncError if it fails."""
        ...

    async def flush_cache(self) -> None:
        """Drop the server's prefix (KV) cache."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...
