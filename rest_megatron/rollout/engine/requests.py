"""Wire formats of the embedded engine: SGLang `/generate` and vLLM `/v1/completions` <-> EngineRequest.

Only the subset the rollout needs is implemented. Parameters that would change the sampled
distribution but are not implemented (penalties, min_p, grammars, ...) are refused with a 400 that
names them, never silently ignored: a silently different distribution would corrupt the RL ratio.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import torch

from rest_megatron.rollout.engine.core import EngineRequest
from rest_megatron.rollout.engine.sampling import RowSampling


class RequestError(ValueError):
    """A malformed or unsupported request (HTTP 400); the message says what to change."""


_SGLANG_KEYS = {
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "stop_token_ids",
    "stop",
    "ignore_eos",
    "sampling_seed",
    "skip_special_tokens",
}
# Accepted when they hold the value that leaves sampling unchanged.
_NEUTRAL = {
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
    "min_new_tokens": 0,
    "n": 1,
    "json_schema": None,
    "regex": None,
    "ebnf": None,
    "logit_bias": None,
    "custom_params": None,
}
_COSMETIC = {"spaces_between_special_tokens", "no_stop_trim", "stream_interval"}


class SeedSource:
    """Per-request generators: from the request's seed, else drawn from the server's seeded RNG."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def generator(self, seed: int | None) -> torch.Generator:
        return torch.Generator().manual_seed(int(seed) if seed is not None else self._rng.getrandbits(63))


def _number(params: dict[str, Any], key: str, default: float, kind: type) -> Any:
    value = params.get(key, default)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
    ):
        raise RequestError(f"sampling param {key!r} must be a {kind.__name__}, got {value!r}")
    return kind(value)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise RequestError(f"stop must be a string or a list of strings, got {value!r}")


def _token_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise RequestError(f"{what} must be a list of token ids (ints)")
    return value


def build_request(
    input_ids: list[int],
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    max_new_tokens: int,
    stop_token_ids: list[int],
    stop: tuple[str, ...],
    ignore_eos: bool,
    seed: int | None,
    seeds: SeedSource,
    original_logprobs: bool,
    top_logprobs_num: int = 0,
) -> EngineRequest:
    """Validate values and make the engine request."""
    if temperature < 0:
        raise RequestError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {top_p}")
    if top_k == 0 or top_k < -1:
        raise RequestError(f"top_k must be -1 (disabled) or >= 1, got {top_k}")
    if max_new_tokens < 1:
        raise RequestError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampling = RowSampling(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        original_logprobs=original_logprobs,
        generator=seeds.generator(seed),
    )
    return EngineRequest(
        input_ids=list(input_ids),
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        stop_token_ids=frozenset(stop_token_ids),
        stop_strings=stop,
        ignore_eos=ignore_eos,
        top_logprobs_num=top_logprobs_num,
    )


# ---- SGLang /generate ---------------------------------------------------------------------
def sglang_requests(
    body: dict[str, Any], seeds: SeedSource, original_logprobs: bool
) -> tuple[list[EngineRequest], list[dict], bool]:
    """Engine requests of a `/generate` body, each one's options, and whether it was a batch."""
    if body.get("text") is not None:
        raise RequestError("the embedded engine takes token ids: send input_ids, not text")
    if body.get("stream"):
        raise RequestError("streaming is not supported by the embedded engine; send stream=false")
    start = body.get("logprob_start_len")
    if start not in (None, -1):
        raise RequestError("prompt logprobs (logprob_start_len >= 0) are not supported; send -1 or omit it")
    input_ids = body.get("input_ids")
    batched = isinstance(input_ids, list) and bool(input_ids) and isinstance(input_ids[0], list)
    prompts = input_ids if batched else [input_ids]
    params = body.get("sampling_params") or {}
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    if len(params_list) != len(prompts):
        raise RequestError(f"{len(params_list)} sampling_params for {len(prompts)} prompts")
    options = []
    requests = []
    for prompt, p in zip(prompts, params_list):
        if not isinstance(p, dict):
            raise RequestError("sampling_params must be an object")
        unknown = set(p) - _SGLANG_KEYS - set(_NEUTRAL) - _COSMETIC
        if unknown:
            raise RequestError(
                f"unsupported sampling params {sorted(unknown)}; the embedded engine supports "
                f"{sorted(_SGLANG_KEYS)}"
            )
        for key, neutral in _NEUTRAL.items():
            if key in p and p[key] is not None and p[key] != neutral:
                raise RequestError(
                    f"sampling param {key}={p[key]!r} is not supported by the embedded engine "
                    f"(only {neutral!r}); remove it"
                )
        requests.append(
            build_request(
                _token_list(prompt, "input_ids"),
                temperature=_number(p, "temperature", 1.0, float),
                top_p=_number(p, "top_p", 1.0, float),
                top_k=_number(p, "top_k", -1, int),
                max_new_tokens=_number(p, "max_new_tokens", 128, int),
                stop_token_ids=_token_list(p.get("stop_token_ids") or [], "stop_token_ids"),
                stop=_stops(p.get("stop")),
                ignore_eos=bool(p.get("ignore_eos", False)),
                seed=p.get("sampling_seed"),
                seeds=seeds,
                original_logprobs=original_logprobs,
                top_logprobs_num=int(body.get("top_logprobs_num") or 0),
            )
        )
        options.append({"skip_special_tokens": p.get("skip_special_tokens", True)})
    return requests, options, batched


def sglang_response(
    request: EngineRequest,
    tokenizer: Any,
    *,
    return_logprob: bool,
    return_text: bool,
    skip_special_tokens: bool,
    started: float,
) -> dict[str, Any]:
    """SGLang's `/generate` reply for one finished request."""

    def text_of(token: int) -> str | None:
        return tokenizer.decode([token], skip_special_tokens=False) if return_text else None

    meta: dict[str, Any] = {
        "id": request.rid,
        "finish_reason": request.finish,
        "prompt_tokens": len(request.input_ids),
        "completion_tokens": len(request.output_ids),
        "cached_tokens": request.cached_tokens,
        "weight_version": request.weight_version,
        "e2e_latency": time.perf_counter() - started,
    }
    if return_logprob:
        meta["input_token_logprobs"] = []
        meta["output_token_logprobs"] = [
            [lp, t, text_of(t)] for lp, t in zip(request.logprobs, request.output_ids)
        ]
        if request.top_logprobs_num:
            meta["output_top_logprobs"] = [
                [[lp, t, text_of(t)] for t, lp in row] for row in request.top_logprobs
            ]
    return {
        "text": tokenizer.decode(request.output_ids, skip_special_tokens=skip_special_tokens),
        "output_ids": request.output_ids,
        "meta_info": meta,
    }


# ---- vLLM /v1/completions -------------------------------------------------------------------
def vllm_request(body: dict[str, Any], seeds: SeedSource) -> tuple[EngineRequest, dict[str, Any]]:
    """The engine request of a `/v1/completions` body with a token-id prompt, and its options."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        if len(prompt) != 1:
            raise RequestError("send one prompt per /v1/completions request")
        prompt = prompt[0]
    if not isinstance(prompt, list):
        raise RequestError("the embedded engine takes token-id prompts: send prompt as a list of ints")
    if (
        body.get("stream")
        or body.get("echo")
        or (body.get("n") or 1) != 1
        or body.get("best_of") not in (None, 1)
    ):
        raise RequestError("stream, echo, n > 1 and best_of are not supported; send one plain completion")
    for key, neutral in (
        ("frequency_penalty", 0.0),
        ("presence_penalty", 0.0),
        ("repetition_penalty", 1.0),
        ("min_p", 0.0),
        ("logit_bias", None),
        ("prompt_logprobs", None),
    ):
        if body.get(key) not in (None, neutral):
            raise RequestError(f"{key} is not supported by the embedded engine; remove it")
    top_k = _number(body, "top_k", -1, int)
    logprobs = body.get("logprobs")
    request = build_request(
        _token_list(prompt, "prompt"),
        temperature=_number(body, "temperature", 1.0, float),
        top_p=_number(body, "top_p", 1.0, float),
        top_k=-1 if top_k == 0 else top_k,
        max_new_tokens=_number(body, "max_tokens", 16, int),
        stop_token_ids=_token_list(body.get("stop_token_ids") or [], "stop_token_ids"),
        stop=_stops(body.get("stop")),
        ignore_eos=bool(body.get("ignore_eos", False)),
        seed=body.get("seed"),
        seeds=seeds,
        # vLLM's default logprobs_mode is raw_logprobs: the model's distribution before temperature.
        original_logprobs=True,
        top_logprobs_num=int(logprobs or 0),
    )
    return request, {
        "logprobs": logprobs,
        "return_token_ids": bool(body.get("return_token_ids")),
        "skip_special_tokens": body.get("skip_special_tokens", True),
        "model": body.get("model"),
    }


def vllm_response(
    request: EngineRequest, tokenizer: Any, options: dict[str, Any], model_name: str
) -> dict[str, Any]:
    """vLLM's `/v1/completions` reply for one finished request."""
    finish = request.finish or {}
    matched = finish.get("matched")
    # vLLM reports the matched stop string or stop_token_ids entry; None when EOS ended it.
    stop_reason = matched if isinstance(matched, str) or matched in request.stop_token_ids else None
    logprobs = None
    if options["logprobs"] is not None:
        pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in request.output_ids]
        offsets, position = [], 0
        for piece in pieces:
            offsets.append(position)
            position += len(piece)
        logprobs = {
            "text_offset": offsets,
            "token_logprobs": request.logprobs,
            "tokens": pieces,
            "top_logprobs": [
                {tokenizer.decode([t], skip_special_tokens=False): lp for t, lp in row}
                for row in request.top_logprobs
            ]
            if request.top_logprobs_num
            else None,
        }
    choice = {
        "index": 0,
        "text": tokenizer.decode(request.output_ids, skip_special_tokens=options["skip_special_tokens"]),
        "logprobs": logprobs,
        "finish_reason": {"stop": "stop", "length": "length"}.get(finish.get("type"), "abort"),
        "stop_reason": stop_reason,
        "token_ids": request.output_ids if options["return_token_ids"] else None,
        "prompt_token_ids": request.input_ids if options["return_token_ids"] else None,
    }
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": options.get("model") or model_name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(request.input_ids),
            "completion_tokens": len(request.output_ids),
            "total_tokens": len(request.input_ids) + len(request.output_ids),
        },
    }
