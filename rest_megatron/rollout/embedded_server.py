"""`rest-megatron rollout-server`: run the embedded CPU inference engine as an HTTP server.

    rest-megatron rollout-server --model HF_DIR --port 30000
    rest-megatron rollout-server --model tiny-qwen3 --port 0 --port-file /tmp/port

It speaks SGLang's `/generate` subset (and vLLM's `/v1/completions` with token-id prompts), so the
rollout uses it exactly like an SGLang server. It binds 127.0.0.1 unless told otherwise. With
`--port 0` the OS picks a free port, which is written to `--port-file` once the server listens
(no race between choosing a port and binding it).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

_DTYPES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="rest-megatron rollout-server", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model folder, or a built-in tiny model name")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=30000, help="port; 0 picks a free one (default 30000)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument("--dtype", default="float32", choices=_DTYPES, help="parameter dtype (float32 on CPU)")
    p.add_argument("--max-running-requests", type=int, default=32, help="requests decoded together at most")
    p.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=32768,
        help="tokens of KV kept for prefix reuse across requests; 0 disables the cache",
    )
    p.add_argument(
        "--return-original-logprob",
        action="store_true",
        default=os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true"),
        help="report log softmax of the raw logits at every temperature (SGLang's "
        "SGLANG_RETURN_ORIGINAL_LOGPROB); default: of the temperature-scaled logits",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of requests that bring no sampling_seed")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--served-model-name", default=None, help="model name reported by /v1/models")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return p


def resolve_model(name_or_path: str) -> Path:
    """A model folder, or the cached folder of a built-in tiny model."""
    from rest_megatron.assets import TINY_MODELS, tiny_model_dir

    if name_or_path in TINY_MODELS:
        return tiny_model_dir(name_or_path)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"--model {name_or_path!r} is not a Hugging Face folder (no config.json) nor one of "
            f"{', '.join(TINY_MODELS)}; point it at a folder with config.json, weights and tokenizer"
        )
    return path


def main(argv: list[str]) -> int:
    """Serve until interrupted; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch
    import uvicorn

    from rest_megatron.rollout.engine.app import create_app
    from rest_megatron.rollout.engine.core import EngineCore

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        model_dir = resolve_model(args.model)
    except ValueError as exc:
        print(f"rest-megatron rollout-server: {exc}", file=sys.stderr)
        return 2
    core = EngineCore(
        model_dir,
        dtype=getattr(torch, args.dtype),
        max_running=args.max_running_requests,
        prefix_cache_tokens=args.prefix_cache_tokens,
    )
    app = create_app(
        core,
        original_logprobs=args.return_original_logprob,
        seed=args.seed,
        served_model_name=args.served_model_name,
    )
    # Bind the socket ourselves so --port 0 works and the port file is written only once we listen.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    if args.port_file:
        tmp = Path(args.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"embedded engine serving {model_dir} on http://{args.host}:{port}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
