"""The inference server an evaluation talks to: one it starts and stops, or one that already runs.

Our clients speak token IDs (docs/design.md §7), so the prompt is rendered here with the model's own
tokenizer and chat template. The tokenizer comes from `--model`; with only `--server`, from the folder
the server reports (`/get_model_info` on SGLang and the embedded engine, `/v1/models` on vLLM) when
that folder exists on this machine.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ENGINES = ("embedded", "sglang", "vllm")


def resolve_model(model: str) -> Path:
    """A Hugging Face folder, or the cached folder of a built-in tiny model name (`tiny-qwen3`, ...)."""
    from rest_megatron.rollout.embedded_server import resolve_model as resolve

    return resolve(model)


def _reported_folder(server: str) -> str | None:
    """The model folder a running server says it serves, or None if it says nothing useful."""
    probes = (
        ("/get_model_info", lambda body: body.get("tokenizer_path") or body.get("model_path")),
        ("/v1/models", lambda body: (body.get("data") or [{}])[0].get("root")),
    )
    for path, pick in probes:
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError, IndexError, TypeError):
            response = httpx.get(server.rstrip("/") + path, timeout=10.0, trust_env=False)
            if response.status_code == 200 and (found := pick(response.json())):
                return str(found)
    return None


def detect_engine(server: str) -> str:
    """The protocol a running server speaks: "sglang" (SGLang and our embedded engine answer
    `/get_model_info`) or "vllm" (`/v1/models` only).

    Raises:
        ServerUnavailable: nothing answers at `server`, or it answers neither probe.
    """
    from rest_megatron.rollout.types import ServerUnavailable

    base = server.rstrip("/")
    try:
        if httpx.get(base + "/get_model_info", timeout=10.0, trust_env=False).status_code == 200:
            return "sglang"
        if httpx.get(base + "/v1/models", timeout=10.0, trust_env=False).status_code == 200:
            return "vllm"
    except httpx.HTTPError as exc:
        raise ServerUnavailable(f"no server answers at {server} ({exc}); start it or fix --server") from exc
    raise ServerUnavailable(
        f"the server at {server} answers neither /get_model_info (SGLang, embedded) nor "
        "/v1/models (vLLM); is it an inference server?"
    )


def check_engine(server: str, engine: str | None) -> str:
    """The engine to use with a running server: detected, or the given one when it speaks that protocol.

    Raises:
        ValueError: `engine` speaks another protocol than the server; the message names the right flag.
        ServerUnavailable: see `detect_engine`.
    """
    found = detect_engine(server)
    if engine is None:
        return found
    if (engine == "vllm") != (found == "vllm"):
        raise ValueError(
            f"--engine {engine} does not match the server at {server}, which speaks the {found} "
            f"protocol; pass --engine {found} (or leave --engine out to detect it)"
        )
    return engine


def resolve_mode(mode: str, tokenizer: Any, model: str) -> str:
    """ "fc" or "prompting" for `--mode`; "auto" picks fc where the chat template renders `tools`.

    Raises:
        ValueError: `--mode fc` with a template that drops the tools (the model would see no function).
    """
    from rest_megatron.rollout.chat import template_renders_tools

    renders = template_renders_tools(tokenizer)
    if mode == "fc" and not renders:
        raise ValueError(
            f"the chat template of {model} drops the `tools` argument, so in --mode fc the model "
            "would see no function; use --mode prompting (BFCL's system prompt) or --mode auto"
        )
    if mode != "auto":
        return mode
    if not renders:
        print(
            f"note: the chat template of {model} does not render tools; using BFCL's prompting mode",
            file=sys.stderr,
        )
    return "fc" if renders else "prompting"


def tokenizer_folder(model: str | None, server: str | None) -> Path:
    """Where to load the tokenizer (and chat template) from.

    Raises:
        ValueError: neither `--model` nor a server that reports a local folder; the message says what to pass.
    """
    if model:
        return resolve_model(model)
    assert server, "the command line requires --model or --server"
    reported = _reported_folder(server)
    if reported and (Path(reported) / "config.json").is_file():
        return Path(reported)
    raise ValueError(
        f"the server at {server} reports model folder {reported!r}, which is not on this machine; pass "
        "--model HF_DIR (a local copy of the model, for its tokenizer and chat template)"
    )


@contextlib.contextmanager
def inference_server(
    *,
    model: Path,
    server: str | None,
    engine: str,
    log_dir: str | None = None,
    timeout_s: float = 600.0,
    tp: int = 1,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the base URL to send requests to; a server started here is stopped on exit.

    Raises:
        ValueError: `engine` cannot be started from here (vLLM: start it yourself and pass --server).
        ServerStartError: the server exited or did not become healthy in `timeout_s` (with its log tail).
    """
    if server:
        yield server.rstrip("/")
        return
    from rest_megatron.rollout.launch import start_embedded_servers, start_sglang_servers

    logs = Path(log_dir or tempfile.mkdtemp(prefix="rest-megatron-eval-"))
    if engine == "embedded":
        servers = start_embedded_servers(model, 1, log_dir=logs, extra={"seed": seed}, timeout_s=timeout_s)
    elif engine == "sglang":
        from rest_megatron.config.schema import RolloutConfig

        rollout = RolloutConfig(engine="sglang", server_tp=tp)
        servers = start_sglang_servers(model, rollout, log_dir=logs, timeout_s=timeout_s)
    else:
        raise ValueError(
            f"--engine {engine} is not started by rest-megatron; start it yourself (e.g. `vllm serve "
            f"{model}`) and pass --server URL"
        )
    try:
        yield servers[0].base_url
    finally:
        for started in servers:
            started.stop()
