"""Inference clients behind one async interface (`InferenceClient`), and a router over several.

| engine     | client         | wire protocol                                        |
|------------|----------------|------------------------------------------------------|
| `sglang`   | `SGLangClient` | native `/generate` with `input_ids`, logprob triples |
| `embedded` | `SGLangClient` | the same subset, served by our CPU engine            |
| `vllm`     | `VLLMClient`   | `/v1/completions`, token-id prompt, `return_token_ids` |
"""

from __future__ import annotations

from collections.abc import Sequence

from rest_megatron.rollout.clients.base import InferenceClient
from rest_megatron.rollout.clients.router import Router
from rest_megatron.rollout.clients.sglang import EmbeddedClient, SGLangClient
from rest_megatron.rollout.clients.vllm import VLLMClient

__all__ = [
    "EmbeddedClient",
    "InferenceClient",
    "Router",
    "SGLangClient",
    "VLLMClient",
    "make_client",
    "make_router",
]


def make_client(
    engine: str, base_url: str, *, timeout_s: float = 600.0, max_retries: int = 3
) -> InferenceClient:
    """The client of one server of `engine` ("sglang", "embedded" or "vllm")."""
    if engine in ("sglang", "embedded"):
        return SGLangClient(base_url, timeout_s=timeout_s, max_retries=max_retries)
    if engine == "vllm":
        return VLLMClient(base_url, timeout_s=timeout_s, max_retries=max_retries)
    raise ValueError(f"unknown rollout engine {engine!r}; use embedded, sglang or vllm")


def make_router(
    engine: str,
    urls: Sequence[str],
    *,
    timeout_s: float = 600.0,
    max_retries: int = 2,
    probe_interval_s: float = 1.0,
) -> Router:
    """A router over the servers at `urls` (few retries per server: the router fails over instead)."""
    clients = [make_client(engine, url, timeout_s=timeout_s, max_retries=max_retries) for url in urls]
    return Router(clients, probe_interval_s=probe_interval_s)
