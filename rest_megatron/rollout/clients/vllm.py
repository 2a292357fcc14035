"""Client of vLLM's OpenAI-compatible `/v1/completions` with token-id prompts (vLLM >= 0.10.2).

    POST /v1/completions {"model": ..., "prompt": [token ids], "max_tokens": n, "temperature": t,
                          "top_p": p, "top_k": k, "logprobs": 1, "return_token_ids": true,
                          "stop_token_ids": [...], "skip_special_tokens": false, "seed": s}
      -> {"choices": [{"token_ids": [...], "logprobs": {"token_logprobs": [...]},
                       "finish_reason": "stop"|"length"|"abort", "stop_reason": id|str|null}]}

vLLM reports *raw* logprobs by default (`--logprobs-mode raw_logprobs`: log softmax of the logits
before temperature), unlike SGLang's temperature-scaled default; at temperature 1 they agree.
vLLM has no `/update_weights_from_disk`: use it to evaluate or serve, and SGLang or the embedded
engine for training, whose weights change every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_megatron.rollout.clients.http import HttpServer
from rest_megatron.rollout.types import BadServerReply, Generation, SamplingParams, WeightSyncError


def parse_completion_reply(reply: Any, server: str) -> Generation:
    """A `Generation` from one `/v1/completions` answer; BadServerReply if it lacks token ids/logprobs."""
    try:
        choice = reply["choices"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise BadServerReply(f"{server}/v1/completions answered {str(reply)[:200]!r} without choices") from exc
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list):
        raise BadServerReply(f"{server}/v1/completions sent no choices[0].token_ids; it needs vLLM >= 0.10.2 "
                             "(return_token_ids)")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if not isinstance(logprobs, list) or any(lp is None for lp in logprobs):
        raise BadServerReply(f"{server}/v1/completions sent no per-token logprobs; the request asks logprobs=1")
    finish = choice.get("finish_reason")
    if finish not in ("stop", "length", "abort"):
        raise BadServerReply(f"{server}/v1/completions sent finish_reason {finish!r}")
    return Generation(output_ids=[int(t) for t in token_ids], logprobs=[float(x) for x in logprobs],
                      finish_reason=finish, matched_stop=choice.get("stop_reason"), server=server)


class VLLMClient:
    """Async client of one vLLM OpenAI-compatible server."""

    def __init__(self, base_url: str, *, model: str | None = None, timeout_s: float = 600.0, max_retries: int = 3,
                 backoff_s: float = 0.2) -> None:
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
                raise BadServerReply(f"{self.base_url}/v1/models lists no model; pass model= explicitly") from exc
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
        return parse_completion_reply(await self._server.request("POST", "/v1/completions", payload), self.base_url)

    async def health(self) -> bool:
        return await self._server.healthy()

    async def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> None:
        raise WeightSyncError(f"{self.base_url}: vLLM servers cannot reload weights over HTTP; train with "
                              "rollout.engine=sglang or embedded, and use vLLM for evaluation and serving")

    async def flush_cache(self) -> None:
        # vLLM's prefix cache is content-addressed by token ids and weights do not change under it.
        return None

    async def aclose(self) -> None:
        await self._server.aclose()
