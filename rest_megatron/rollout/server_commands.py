"""The command lines of inference servers (SGLang, vLLM, the embedded engine), built from a recipe.

    cmd = sglang_command(model_path, port=30000, tp=2, mem_fraction_static=0.7,
                         tool_call_parser="qwen25", extra={"context_length": 8192})

Extra SGLang flags come from the recipe's `rollout.sglang` mapping, verbatim (docs/style.md: we never
re-declare upstream flags): `mem_fraction_static: 0.7` -> `--mem-fraction-static 0.7`,
`enable_metrics: true` -> `--enable-metrics`, `false`/null -> omitted, a list -> the flag then each
item (argparse nargs), a dict -> one JSON argument.

`server_command(rollout, model, port=..., host=...)` is the one place a recipe becomes a server's
command line: the trainer's launcher (`rollout/launch.py`) and `slurm/train.sbatch` (through
`rest-megatron serve-command`) both use it, so the servers always match the recipe.

Sampling log-probs at temperature T != 1. The trainer scores log softmax(z / T) of the unfiltered
logits (`trainer/actor.py`); each engine's `/generate` log-probs, read from their sources:
- SGLang 0.5 (`python/sglang/srt/layers/sampler.py`, `Sampler.forward`): the sampling path divides
  the logits by the temperature, softmaxes, and reports log(probs), i.e. log softmax(z / T) before
  top-k / top-p / min-p filtering: the trainer's numbers. The environment variable
  `SGLANG_RETURN_ORIGINAL_LOGPROB` switches it to log softmax(z) (the raw distribution); the launcher
  removes it from the server's environment (`env -u`). (`--rl-on-policy-target` only changes the
  precision of the same quantity.)
- vLLM >= 0.10 (`vllm/v1/sample/sampler.py`, `vllm/v1/sample/ops/topk_topp_sampler.py`
  `TopKTopPSampler.forward_native`): the default `--logprobs-mode raw_logprobs` reports log softmax(z)
  whatever T; `processed_logprobs` reports log softmax of the logits after temperature *and* after
  top-k / top-p masking. So with no top-k / top-p, `processed_logprobs` agrees at any T; with them,
  only `raw_logprobs` at T = 1 does; T != 1 with top-k / top-p cannot agree and is refused at config
  load (`vllm_logprobs_mode`).
- the embedded engine (`rollout/engine/sampling.py`): SGLang's semantics, log softmax(z / T) before
  truncation (tested in `tests/rollout/engine/test_sampling.py`).

Replayed sampling: SGLang uses a request's `sampling_seed` only under
`--enable-deterministic-inference` (`server_args.py`; the sampler's `multinomial_with_seed`), which
`rollout.deterministic` turns on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

# Flags the launcher owns: set them through the keyword arguments, not the passthrough mapping.
_OWNED = {
    "model_path": "the model path",
    "host": "host",
    "port": "port",
    "tp_size": "rollout.server_tp",
    "tp": "rollout.server_tp",
    "enable_deterministic_inference": "rollout.deterministic",
}
_VLLM_OWNED = {
    "model": "the model path",
    "host": "host",
    "port": "port",
    "tensor_parallel_size": "rollout.server_tp",
    "tp": "rollout.server_tp",
    "dtype": "model.dtype",
    "worker_extension_cls": "the launcher (the weight-update extension, rollout/vllm_worker.py)",
    "logprobs_mode": "rollout.temperature/top_p/top_k (the launcher picks the mode that matches the trainer)",
}

SGLANG_RAW_LOGPROB_ENV = "SGLANG_RETURN_ORIGINAL_LOGPROB"
"""Makes SGLang report untempered log-probs; never set for the servers we launch."""


def passthrough_flags(
    options: Mapping[str, Any], *, owned: Mapping[str, str] = _OWNED, section: str = "rollout.sglang"
) -> list[str]:
    """`{"mem_fraction_static": 0.7, "enable_metrics": True}` ->
    `["--mem-fraction-static", "0.7", "--enable-metrics"]`."""
    flags: list[str] = []
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name in owned:
            raise ValueError(f"{section}.{key} is set by the launcher; use {owned[name]} instead")
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def sglang_command(
    model_path: str | Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    tp: int = 1,
    mem_fraction_static: float | None = None,
    tool_call_parser: str | None = None,
    extra: Mapping[str, Any] | None = None,
    deterministic: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The argv that launches one SGLang server.

    Args:
        mem_fraction_static: GPU memory fraction for weights and KV cache (None: SGLang's default).
        tool_call_parser: SGLang's parser for its OpenAI API (e.g. "qwen25"); our rollout parses tool
            calls from token IDs itself, so this only matters for serving.
        extra: `rollout.sglang` passthrough flags.
        deterministic: `--enable-deterministic-inference` (`rollout.deterministic`).
    """
    if tp < 1:
        raise ValueError(f"rollout.server_tp must be >= 1, got {tp}")
    extra = dict(extra or {})
    for name, value in (("mem_fraction_static", mem_fraction_static), ("tool_call_parser", tool_call_parser)):
        if value is not None and extra.get(name) not in (None, value):
            raise ValueError(
                f"{name} is given twice ({value!r} and rollout.sglang.{name}={extra[name]!r}); keep one"
            )
        if value is not None:
            extra[name] = value
    return [
        python,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
        "--tp-size",
        str(tp),
        *passthrough_flags(extra),
        *(["--enable-deterministic-inference"] if deterministic else []),
    ]


def vllm_logprobs_mode(temperature: float, top_p: float, top_k: int) -> str:
    """The vLLM `--logprobs-mode` whose sampling log-probs equal the trainer's log softmax(z / T).

    `processed_logprobs` is tempered but also top-k / top-p masked, `raw_logprobs` is untempered (see
    the module docstring), so: no filter -> processed (any T); a filter at T = 1 -> raw.

    Raises:
        ValueError: T != 1 with top-k or top-p, where no mode agrees; the message names the fixes.
    """
    filtered = top_p < 1.0 or top_k >= 1
    if not filtered:
        return "processed_logprobs"
    if temperature == 1.0:
        return "raw_logprobs"
    raise ValueError(
        f"rollout.engine=vllm cannot report the trainer's log-probs at rollout.temperature={temperature} "
        "with "
        f"rollout.top_p={top_p} / rollout.top_k={top_k}: its processed log-probs are renormalized over the "
        "top-k/top-p set, its raw ones are untempered; set rollout.temperature=1, or rollout.top_p=1 and "
        "rollout.top_k=-1, or use rollout.engine=sglang"
    )


def vllm_server_args(rollout: Any, *, dtype: str | None = None) -> list[str]:
    """vLLM server flags after `--model/--host/--port` for a RolloutConfig: TP size, the log-probs mode
    that matches the trainer (`vllm_logprobs_mode`), the weight-update worker extension (weights from the
    trainer, `rollout/vllm_worker.py`), `dtype` (`model.dtype`) if given, then `rollout.vllm` verbatim."""
    from rest_megatron.rollout.clients.vllm import WORKER_EXTENSION

    mode = vllm_logprobs_mode(rollout.temperature, rollout.top_p, rollout.top_k)
    return [
        "--tensor-parallel-size",
        str(rollout.server_tp),
        "--logprobs-mode",
        mode,
        "--worker-extension-cls",
        WORKER_EXTENSION,
        *(["--dtype", dtype] if dtype else []),
        *passthrough_flags(rollout.vllm, owned=_VLLM_OWNED, section="rollout.vllm"),
    ]


def server_command(
    rollout: Any,
    model_path: str | Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    python: str = sys.executable,
    dtype: str | None = None,
) -> list[str]:
    """The argv of one inference server as the recipe's `rollout` section states it (RolloutConfig).

    The only builder of server command lines from a config: the trainer's launcher and
    `rest-megatron serve-command` (what `slurm/train.sbatch` runs) both call it.
    """
    if rollout.engine == "sglang":
        # `env -u`: SGLang must report tempered log-probs whatever the caller's environment holds.
        return [
            "env",
            "-u",
            SGLANG_RAW_LOGPROB_ENV,
            *sglang_command(
                model_path,
                port=port,
                host=host,
                tp=rollout.server_tp,
                extra=rollout.sglang,
                deterministic=rollout.deterministic,
                python=python,
            ),
        ]
    if rollout.engine == "vllm":
        # VLLM_SERVER_DEV_MODE serves /collective_rpc, which the weight-update extension answers through.
        return [
            "env",
            "VLLM_SERVER_DEV_MODE=1",
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_path),
            "--host",
            host,
            "--port",
            str(port),
            *vllm_server_args(rollout, dtype=dtype),
        ]
    if rollout.engine == "embedded":
        return embedded_command(model_path, port=port, host=host, python=python)
    raise ValueError(f"rollout.engine={rollout.engine!r}: use sglang, vllm or embedded")


def embedded_command(
    model_path: str | Path,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    port_file: str | None = None,
    extra: Mapping[str, Any] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv that launches one embedded CPU engine (`rest-megatron rollout-server`)."""
    cmd = [
        python,
        "-m",
        "rest_megatron.rollout.embedded_server",
        "--model",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if port_file:
        cmd += ["--port-file", port_file]
    return cmd + passthrough_flags(
        extra or {}, owned={"model": "the model path", "host": "host", "port": "port"}
    )


def vllm_python(configured: str | None) -> str:
    """The interpreter of vLLM servers: `rollout.vllm_python`, else the repository's `.venv-vllm`
    (scripts/setup_vllm.sh) when it exists, else this one."""
    if configured:
        return configured
    local = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    return str(local) if local.exists() else sys.executable


def vllm_env(base: Mapping[str, str], device: str) -> dict[str, str]:
    """The environment of a vLLM server: /collective_rpc served, our package importable (the worker
    extension), nothing fetched from a hub; on CPU a 1 GiB KV cache unless one is set."""
    env = dict(base)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["VLLM_SERVER_DEV_MODE"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def serve_command_main(argv: Sequence[str]) -> int:
    """`rest-megatron serve-command [RECIPE [key=value ...]] --host H --port P [...]`: print one
    server's argv (`server_command`), shell-quoted, or NUL-separated with `--null` for scripts."""
    import argparse
    import shlex

    from rest_megatron.config import ConfigError, RolloutConfig, load_config

    parser = argparse.ArgumentParser(
        prog="rest-megatron serve-command", description=serve_command_main.__doc__
    )
    parser.add_argument("recipe", nargs="?", help="recipe YAML (without: the rollout defaults)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", help="instead of rollout.engine (sglang, vllm, embedded)")
    parser.add_argument("--model", help="instead of model.path")
    parser.add_argument("--tp", type=int, help="instead of rollout.server_tp")
    parser.add_argument("--python", default="python", help="interpreter in the printed command [python]")
    parser.add_argument(
        "--null", action="store_true", help="NUL after each argument instead of one quoted line"
    )
    args = parser.parse_intermixed_args(argv)
    changes = {k: v for k, v in (("engine", args.engine), ("server_tp", args.tp)) if v is not None}
    try:
        if args.recipe:
            config = load_config(args.recipe, args.overrides)
            rollout, model = config.rollout, args.model or config.model.path
        else:
            rollout, model = RolloutConfig(), args.model
        if model is None:
            raise ConfigError("give --model (there is no recipe to read model.path from)")
        cmd = server_command(
            replace(rollout, **changes), model, port=args.port, host=args.host, python=args.python
        )
    except (ConfigError, ValueError) as err:
        print(f"rest-megatron serve-command: {err}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{a}\0" for a in cmd) if args.null else shlex.join(cmd) + "\n")
    return 0
