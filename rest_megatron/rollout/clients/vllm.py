"""Client of vLLM's OpenAI-compatible `/v1/completions` with token-id prompts (vLLM >= 0.10.2).

    POST /v1/completions {"model": ..., "prompt": [token ids], "max_tokens": n, "temperature": t,
                          "top_p": p, "top_k": k, "logprobs": 1, "return_token_ids": true,
                          "stop_token_ids": [...], "skip_special_tokens": false, "seed": s}
      -> {"choices": [{"token_ids": [...], "logprobs": {"token_logprobs": [...]},
                       "finish_reason": "stop"|"length"|"abort", "stop_reason": id|str|null}]}

Sampling log-probs: by default vLLM reports *raw* ones (log softmax before temperature); the
trainer compares them with its log-probs of the tempered distribution, so servers for training run
with `--logprobs-mode processed_logprobs` (`server_commands.vllm_server_args`); at temperature 1 both agree.

Weight updates go through vLLM's `/collective_rpc` (served with `VLLM_SERVER_DEV_MODE=1`):

    disk:        {"method": "reload_weights", "kwargs": {"weights_path": folder}}
                 (vLLM's own in-place reload)
    distributed: {"method": "rest_init_weights_update_group" / "rest_update_weights_from_distributed",
                  "args": [json]}   (our worker extension, `rollout/vllm_worker.py`)

then `/reset_prefix_cache`, so no cached prefix of the old weights is reused. `/sleep` and `/wake_up`
free and restore the GPU memory of a colocated server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rest_megatron.rollout.clients.http import HttpServer
from rest_megatron.rollout.types import BadServerReply, Generation, SamplingParams, WeightSyncError

WORKER_EXTENSION = "rest_megatron.rollout.vllm_worker.WeightUpdateExtension"


def parse_completion_reply(reply: Any, server: str) -> Generation:
    """A `Generation` from one `/v1/completions` answer; BadServerReply if it lacks token ids/logprobs."""
    try:
        choice = reply["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise BadServerReply(
            f"{server}/v1/completions answered {str(reply)[:200]!r} without choices"
        ) from exc
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list):
        raise BadServerReply(
            f"{server}/v1/completions sent no choices[0].token_ids; it needs vLLM >= 0.10.2 "
            "(return_token_ids)"
        )
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if not isinstance(logprobs, list) or any(lp is None for lp in logprobs):
        raise BadServerReply(
            f"{server}/v1/completions sent no per-token logprobs; the request asks logprobs=1"
        )
    finish = choice.get("finish_reason")
    if finish not in ("stop", "length", "abort"):
        raise BadServerReply(f"{server}/v1/completions sent finish_reason {finish!r}")
    return Generation(
        output_ids=[int(t) for t in token_ids],
        logprobs=[float(x) for x in logprobs],
        finish_reason=finish,
        matched_stop=choice.get("stop_reason"),
        server=server,
    )


class VLLMClient:
    """Async client of one vLLM OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self._server = HttpServer(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s)
        self.base_url = self._server.base_url
        self.model = model

    def __repr__(self) -> str:
        return f"VLLMClient({self.base_url!r})"

    async def _model_name(self) -> str:
        if self.model is None:
            reply = await self._server.request("GET", "/v1/models")
            try:
                self.model = str(reply["data"][0]["id"])
            except (KeyError, IndexError, TypeError) as exc:
                raise BadServerReply(
                    f"{self.base_url}/v1/models lists no model; pass model= explicitly"
                ) from exc
        return self.model

    async def generate(self, input_ids: Sequence[int], params: SamplingParams) -> Generation:
        payload: dict[str, Any] = {
            "model": await self._model_name(),
            "prompt": list(input_ids),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "logprobs": 1,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }
        if params.stop_token_ids:
            payload["stop_token_ids"] = list(params.stop_token_ids)
        if params.ignore_eos:
            payload["ignore_eos"] = True
        if params.seed is not None:
            payload["seed"] = params.seed
        return parse_completion_reply(
            await self._server.request("POST", "/v1/completions", payload), self.base_url
        )

    async def health(self) -> bool:
        return await self._server.healthy()

    async def _rpc(
        self, method: str, *, args: Sequence[str] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        try:
            return await self._server.request(
                "POST", "/collective_rpc", {"method": method, "args": list(args), "kwargs": kwargs or {}}
            )
        except BadServerReply as exc:
            hint = (
                "; start vLLM with VLLM_SERVER_DEV_MODE=1 (which serves /collective_rpc) and "
                "--worker-extension-cls "
                f"{WORKER_EXTENSION} (server_commands.vllm_server_args does both), "
                "or set rollout.weight_sync=disk"
                if "404" in str(exc) or "rest_" in str(exc)
                else ""
            )
            raise WeightSyncError(f"{self.base_url}/collective_rpc {method} failed: {exc}{hint}") from exc

    async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> None:
        """vLLM's in-place reload from a Hugging Face folder of the same architecture."""
        await self._rpc("reload_weights", kwargs={"weights_path": str(model_path)})
        await self.flush_cache()

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
        """Every worker joins the trainer's weight-update group (blocks until all members joined)."""
        await self._rpc(
            "rest_init_weights_update_group",
            args=[
                json.dumps(
                    {
                        "master_address": master_address,
                        "master_port": master_port,
                        "rank_offset": rank_offset,
                        "world_size": world_size,
                        "group_name": group_name,
                        "backend": backend,
                    }
                )
            ],
        )

    async def update_weights_from_distributed(self, payload: dict[str, Any]) -> None:
        """Receive and load one broadcast bucket (payload from `weight_sync.bucket_payload`)."""
        await self._rpc("rest_update_weights_from_distributed", args=[json.dumps(payload)])
        if payload.get("flush_cache"):
            await self.flush_cache()

    async def flush_cache(self) -> None:
        await self._server.request("POST", "/reset_prefix_cache", expect_json=False)

    async def release_memory_occupation(self) -> None:
        """Free the weights' and KV cache's GPU memory (colocated training): vLLM's /sleep."""
        await self._server.request("POST", "/sleep?level=1", expect_json=False)

    async def resume_memory_occupation(self) -> None:
        """Re-allocate what `release_memory_occupation` freed: vLLM's /wake_up."""
        await self._server.request("POST", "/wake_up", expect_json=False)

    async def aclose(self) -> None:
        await self._server.aclose()
