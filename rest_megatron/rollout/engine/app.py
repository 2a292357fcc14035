"""The embedded engine's HTTP API: SGLang's native endpoints (docs/design.md §7) plus vLLM's completions.

| endpoint                              | behaviour here                                            |
|---------------------------------------|-----------------------------------------------------------|
| POST /generate                        | token ids in, `output_ids` + `meta_info` out (one or a batch) |
| POST /update_weights_from_disk        | load a HF folder of the same architecture; clears the cache |
| GET/POST /flush_cache                 | clears the prefix cache                                   |
| GET /health, /health_generate         | 200 while the engine thread is alive                      |
| GET /get_model_info, /get_server_info | model path, weight version; queue and cache counters       |
| POST /release_memory_occupation, /resume_memory_occupation | accepted, nothing to release on CPU  |
| POST /init_weights_update_group,      | join the trainer's group, receive buckets over gloo       |
|   /update_weights_from_distributed    | (`weights.py`)                                            |
| POST /v1/completions, GET /v1/models  | vLLM's token-id completions subset (`return_token_ids`)    |

Handlers only parse, queue and await: the model runs on the engine thread. A request whose client
disconnects is aborted, so a timed-out and retried request does not keep computing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from rest_megatron.rollout.engine.core import EngineCore, EngineRequest
from rest_megatron.rollout.engine.requests import (
    RequestError,
    SeedSource,
    sglang_requests,
    sglang_response,
    vllm_request,
    vllm_response,
)
from rest_megatron.rollout.engine.weights import WeightReceiver

_DISCONNECT_POLL_S = 0.2


def _error(status: int, message: str) -> JSONResponse:
    # SGLang's error shape; vLLM clients read "message" from the same object.
    return JSONResponse(
        {"error": {"message": message, "code": status}, "message": message}, status_code=status
    )


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise RequestError(f"the body is not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


async def _await_all(http: Request, requests: list[EngineRequest], core: EngineCore) -> None:
    """Wait for the engine; abort the requests if the client disconnects first."""
    for r in requests:
        core.validate(r)  # all or nothing: a bad prompt in a batch starts none of them
    futures = [asyncio.wrap_future(core.submit(r)) for r in requests]
    done = asyncio.ensure_future(asyncio.gather(*futures))
    try:
        while True:
            finished, _ = await asyncio.wait({done}, timeout=_DISCONNECT_POLL_S)
            if finished:
                done.result()
                return
            if await http.is_disconnected():
                for r in requests:
                    r.aborted = True
                return
    finally:
        if not done.done():
            for r in requests:
                r.aborted = True
            done.cancel()
            with contextlib.suppress(BaseException):
                await done


def create_app(
    core: EngineCore,
    *,
    original_logprobs: bool = False,
    seed: int | None = None,
    served_model_name: str | None = None,
) -> FastAPI:
    """The FastAPI app serving `core` (started and stopped with the app's lifespan)."""
    seeds = SeedSource(seed)
    receiver = WeightReceiver()
    model_name = served_model_name or core.model_path

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        core.start()
        yield
        await asyncio.to_thread(core.stop)

    app = FastAPI(title="rest-megatron embedded engine", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return _error(400, str(exc))

    @app.get("/health")
    @app.get("/health_generate")
    async def health() -> Any:
        if not core._thread.is_alive():  # noqa: SLF001 - our own engine
            return _error(503, "the engine thread died; see the server log")
        return PlainTextResponse("")

    @app.get("/get_model_info")
    async def model_info() -> dict:
        return {
            "model_path": core.model_path,
            "tokenizer_path": core.model_path,
            "is_generation": True,
            "weight_version": core.weight_version,
            "served_model_name": model_name,
        }

    @app.get("/get_server_info")
    async def server_info() -> dict:
        return {
            "num_running": core.num_running,
            "num_queued": core.num_queued,
            "max_running": core.max_running,
            "num_decode_steps": core.num_decode_steps,
            "num_decode_rows": core.num_decode_rows,
            "prefix_cache_entries": len(core.prefix_cache),
            "prefix_cache_tokens": core.prefix_cache.num_tokens,
            "prefix_cache_hit_tokens": core.prefix_cache.hits_tokens,
            "weight_version": core.weight_version,
            "return_original_logprob": original_logprobs,
        }

    @app.post("/generate")
    async def generate(http: Request) -> Any:
        started = time.perf_counter()
        body = await _body(http)
        requests, options, batched = sglang_requests(body, seeds, original_logprobs)
        try:
            await _await_all(http, requests, core)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        return_logprob = body.get("return_logprob") or False
        flags = return_logprob if isinstance(return_logprob, list) else [return_logprob] * len(requests)
        out = [
            sglang_response(
                r,
                core.tokenizer,
                return_logprob=bool(flag),
                skip_special_tokens=o["skip_special_tokens"],
                return_text=bool(body.get("return_text_in_logprobs")),
                started=started,
            )
            for r, o, flag in zip(requests, options, flags)
        ]
        return out if batched else out[0]

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(http: Request) -> Any:
        body = await _body(http)
        path = body.get("model_path")
        if not isinstance(path, str) or not path:
            raise RequestError("model_path (a Hugging Face folder) is required")
        future = core.run_command(lambda: core.update_weights_from_disk(path, body.get("weight_version")))
        try:
            message = await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - the reason goes back to the caller
            return JSONResponse(
                {"success": False, "message": f"{type(exc).__name__}: {exc}", "num_paused_requests": 0},
                status_code=400,
            )
        return {"success": True, "message": message, "num_paused_requests": 0}

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache() -> Any:
        await asyncio.wrap_future(core.run_command(core.prefix_cache.clear))
        return PlainTextResponse("Cache flushed.\n")

    @app.post("/release_memory_occupation")
    @app.post("/resume_memory_occupation")
    async def memory_occupation() -> dict:
        return {"success": True, "message": "the embedded CPU engine holds no GPU memory"}

    @app.post("/init_weights_update_group")
    async def init_weights_update_group(http: Request) -> Any:
        body = await _body(http)
        try:
            message = await asyncio.to_thread(receiver.join, body)
        except Exception as exc:  # noqa: BLE001 - the reason goes back to the caller
            return JSONResponse(
                {"success": False, "message": f"{type(exc).__name__}: {exc}"}, status_code=400
            )
        return {"success": True, "message": message}

    @app.post("/update_weights_from_distributed")
    async def update_weights_from_distributed(http: Request) -> Any:
        body = await _body(http)
        try:
            names, dtypes, shapes = receiver.check(body)
        except ValueError as exc:
            return JSONResponse({"success": False, "message": str(exc)}, status_code=400)

        def receive() -> str:
            receiver.receive_into(core.model, names, dtypes, shapes)
            if body.get("flush_cache", True):  # the last bucket: every tensor has arrived
                core.weights_changed(body.get("weight_version"))
            return f"received {len(names)} tensors (weight version {core.weight_version})"

        try:
            message = await asyncio.wrap_future(core.run_command(receive))
        except Exception as exc:  # noqa: BLE001
            return JSONResponse(
                {"success": False, "message": f"{type(exc).__name__}: {exc}"}, status_code=400
            )
        return {"success": True, "message": message}

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "rest-megatron"}],
        }

    @app.post("/v1/completions")
    async def completions(http: Request) -> Any:
        body = await _body(http)
        request, options = vllm_request(body, seeds)
        try:
            await _await_all(http, [request], core)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        return vllm_response(request, core.tokenizer, options, model_name)

    return app
