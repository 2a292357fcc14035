"""Client of SGLang's native HTTP API (and of the embedded engine, which speaks the same subset).

    POST /generate {"input_ids": [...], "sampling_params": {...}, "return_logprob": true,
                    "logprob_start_len": -1}
      -> {"output_ids": [...], "meta_info": {"output_token_logprobs": [[logprob, token_id, text], ...],
                                            "finish_reason": {"type": "stop"|"length"|"abort", ...}}}
    POST /update_weights_from_disk {"model_path": ...}          -> {"success": bool, "message": str}
    POST /init_weights_update_group {master_address, master_port, rank_offset, world_size, group_name,
                                     backend}
    POST /update_weights_from_distributed {names, dtypes, shapes, group_name, flush_cache, weight_version}
    POST /flush_cache, GET /health, POST /release_memory_occupation, POST /resume_memory_occupation

Field names follow `sglang/srt/managers/io_struct.py` (GenerateReqInput, UpdateWeightFromDiskReqInput,
InitWeightsUpdateGroupReqInput, UpdateWeightsFromDistributedReqInput).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_megatron.rollout.clients.http import HttpServer
from rest_megatron.rollout.types import BadServerReply, Generation, SamplingParams, WeightSyncError


def parse_generate_reply(reply: Any, server: str) -> Generation:
    """A `Generation` from one `/generate` answer; BadServerReply if it is not SGLang's schema."""
    if not isinstance(reply, dict) or not isinstance(reply.get("meta_info"), dict):
        raise BadServerReply(
            f"{server}/generate answered {str(reply)[:200]!r}, which has no meta_info; "
            "is this an SGLang server?"
        )
    meta = reply["meta_info"]
    triples = meta.get("output_token_logprobs")
    if not isinstance(triples, list):
        raise BadServerReply(
            f"{server}/generate sent no meta_info.output_token_logprobs; the request must set "
            "return_logprob=true and the server must support it"
        )
    try:
        logprobs = [float(t[0]) for t in triples]
        ids_from_logprobs = [int(t[1]) for t in triples]
    except (TypeError, ValueError, IndexError) as exc:
        raise BadServerReply(
            f"{server}/generate sent malformed output_token_logprobs ({exc}); expected "
            "[logprob, token_id, text] triples"
        ) from exc
    output_ids = reply.get("output_ids", ids_from_logprobs)
    if output_ids != ids_from_logprobs:
        raise BadServerReply(
            f"{server}/generate: output_ids and the token ids of output_token_logprobs differ"
        )
    finish = meta.get("finish_reason")
    kind = finish.get("type") if isinstance(finish, dict) else finish
    if kind not in ("stop", "length", "abort"):
        raise BadServerReply(
            f"{server}/generate sent finish_reason {finish!r}; expected type stop/length/abort"
        )
    matched = finish.get("matched") if isinstance(finish, dict) else None
    extra = {
        k: meta[k] for k in ("weight_version", "cached_tokens", "e2e_latency", "prompt_tokens") if k in meta
    }
    return Generation(
        output_ids=list(output_ids),
        logprobs=logprobs,
        finish_reason=kind,
        matched_stop=matched,
        server=server,
        extra=extra,
    )


class SGLangClient:
    """Async client of one SGLang (or embedded-engine) server."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 600.0, max_retries: int = 3, backoff_s: float = 0.2
    ) -> None:
        self._server = HttpServer(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s)
        self.base_url = self._server.base_url

    def __repr__(self) -> str:
        return f"SGLangClient({self.base_url!r})"

    async def generate(self, input_ids: Sequence[int], params: SamplingParams) -> Generation:
        payload = {
            "input_ids": list(input_ids),
            "sampling_params": params.to_sglang(),
            "return_logprob": True,
            "logprob_start_len": -1,  # logprobs of the output only; prompt logprobs cost a forward
        }
        return parse_generate_reply(await self._server.request("POST", "/generate", payload), self.base_url)

    async def health(self) -> bool:
        return await self._server.healthy()

    async def _weights_call(self, path: str, payload: dict[str, Any], timeout_s: float | None = None) -> str:
        try:
            reply = await self._server.request("POST", path, payload, timeout_s=timeout_s)
        except BadServerReply as exc:
            raise WeightSyncError(f"{self.base_url}{path} failed: {exc}") from exc
        if not isinstance(reply, dict) or not reply.get("success"):
            message = reply.get("message") if isinstance(reply, dict) else reply
            raise WeightSyncError(f"{self.base_url}{path} did not succeed: {message}")
        return str(reply.get("message", ""))

    async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> None:
        payload: dict[str, Any] = {"model_path": str(model_path)}
        if weight_version is not None:
            payload["weight_version"] = weight_version
        await self._weights_call("/update_weights_from_disk", payload)

    async def init_weights_update_group(
        self,
        *,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        group_name: str,
        backend: str = "nccl",
    ) -> None:
        """Join the trainer's weight-broadcast process group (blocks until every member joined)."""
        await self._weights_call(
            "/init_weights_update_group",
            {
                "master_address": master_address,
                "master_port": master_port,
                "rank_offset": rank_offset,
                "world_size": world_size,
                "group_name": group_name,
                "backend": backend,
            },
        )

    async def update_weights_from_distributed(self, payload: dict[str, Any]) -> None:
        """Receive one bucket of broadcast tensors (payload from `weight_sync.bucket_payload`)."""
        await self._weights_call("/update_weights_from_distributed", payload)

    async def flush_cache(self) -> None:
        await self._server.request("POST", "/flush_cache", expect_json=False)

    async def release_memory_occupation(self) -> None:
        """Free the KV cache and weights' GPU memory (colocated training)."""
        await self._server.request("POST", "/release_memory_occupation", {})

    async def resume_memory_occupation(self) -> None:
        """Re-allocate what `release_memory_occupation` freed."""
        await self._server.request("POST", "/resume_memory_occupation", {})

    async def aclose(self) -> None:
        await self._server.aclose()


EmbeddedClient = SGLangClient
"""The embedded engine speaks SGLang's subset, so its client is the SGLang client."""
