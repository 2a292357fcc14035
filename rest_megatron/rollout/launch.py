"""Build the command lines of inference servers (SGLang, vLLM, the embedded engine) from a recipe; start,
health-check and stop them.

    cmd = sglang_command(model_path, port=30000, tp=2, mem_fraction_static=0.7,
                         tool_call_parser="qwen25", extra={"context_length": 8192})
    with ServerProcess(cmd, base_url="http://127.0.0.1:30000", log_path="logs/sglang-0.log") as server:
        server.wait_healthy(timeout_s=600)   # raises ServerStartError with the log tail on failure

Extra SGLang flags come from the recipe's `rollout.sglang` mapping, verbatim (docs/style.md: we never
re-declare upstream flags): `mem_fraction_static: 0.7` -> `--mem-fraction-static 0.7`,
`enable_metrics: true` -> `--enable-metrics`, `false`/null -> omitted, a list -> the flag then each
item (argparse nargs), a dict -> one JSON argument. Servers run in their own process group so
stopping one stops its children (SGLang's TP workers) too.

`server_command(rollout, model, port=..., host=...)` is the one place a recipe becomes a server's
command line: the trainer's launcher and `slurm/train.sbatch` (through `rest-megatron serve-command`)
both use it, so the servers always match the recipe.

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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from tools_sandbox.executor import die_with_parent

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


class ServerStartError(RuntimeError):
    """A server exited or did not become healthy in time; the message ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer `--port 0 --port-file` where the server supports it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def start_vllm_servers(
    model_path: str | Path,
    config: Any,
    *,
    log_dir: str | Path,
    timeout_s: float = 900.0,
    env: Mapping[str, str] | None = None,
    trainer_gpus: int = 0,
) -> list[ServerProcess]:
    """Start `rollout.num_servers` vLLM OpenAI servers for training (Config) and wait for health; on GPUs
    they take this node's GPUs after the trainer's first `trainer_gpus` (`gpu_placement`)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    rollout = config.rollout
    base_env = vllm_env(os.environ if env is None else env, config.launch.device)
    placement = [None] * rollout.num_servers
    if trainer_gpus or config.launch.device == "cuda":
        import torch

        visible = base_env.get("CUDA_VISIBLE_DEVICES")
        _, placement = gpu_placement(
            visible,
            device_count=0 if visible is not None else torch.cuda.device_count(),
            trainer_gpus=trainer_gpus,
            num_servers=rollout.num_servers,
            server_tp=rollout.server_tp,
            share=rollout.share_trainer_gpus,
        )

    def make(index: int) -> ServerProcess:
        port = free_port()
        cmd = server_command(
            rollout, model_path, port=port, python=vllm_python(rollout.vllm_python), dtype=config.model.dtype
        )
        server_env = (
            base_env if placement[index] is None else {**base_env, "CUDA_VISIBLE_DEVICES": placement[index]}
        )
        return ServerProcess(
            cmd, base_url=f"http://127.0.0.1:{port}", log_path=log_dir / f"vllm-{index}.log", env=server_env
        )

    return _start_all(make, rollout.num_servers, timeout_s)


def log_tail(path: str | Path, num_chars: int = 4000) -> str:
    """The end of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - num_chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class ServerProcess:
    """One server subprocess: its log file, its base URL, health waiting and shutdown.

    Give `base_url` when the port is known up front, or `port_file` when the server picks its own
    port and writes it there (the embedded engine's `--port 0 --port-file`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        base_url: str | None = None,
        port_file: str | None = None,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if (base_url is None) == (port_file is None):
            raise ValueError("give exactly one of base_url (known port) or port_file (server-chosen port)")
        self.argv = list(argv)
        self._base_url = base_url.rstrip("/") if base_url else None
        self.port_file = port_file
        self.host = host
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="rollout-server-", suffix=".log")[1])
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """http://host:port (known after the server wrote its port file)."""
        if self._base_url is None:
            if self.port_file is None or not os.path.exists(self.port_file):
                raise ServerStartError(f"the server has not written its port to {self.port_file} yet")
            self._base_url = f"http://{self.host}:{Path(self.port_file).read_text().strip()}"
        return self._base_url

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (its own session, stdout and stderr into the log file)."""
        if self.process is not None:
            raise RuntimeError("this server was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Own session (stopped as a group), and SIGTERM from the kernel if this process dies first.
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def wait_healthy(self, timeout_s: float = 600.0, poll_s: float = 0.2) -> str:
        """Block until GET /health answers 200; returns the base URL.

        Raises:
            ServerStartError: the process exited, or `timeout_s` passed; the message has the log tail.
        """
        assert self.process is not None, "start() the server first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"the server exited with status {code} before becoming healthy "
                    f"(command: {' '.join(self.argv)}); {self.log_path} ends with:\n"
                    f"{log_tail(self.log_path)}"
                )
            if self._base_url is not None or (self.port_file and os.path.exists(self.port_file)):
                try:
                    if httpx.get(f"{self.base_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                        return self.base_url
                except httpx.HTTPError:
                    pass
            time.sleep(poll_s)
        tail = log_tail(self.log_path)
        self.stop()
        raise ServerStartError(
            f"the server did not become healthy within {timeout_s:g} s (command: "
            f"{' '.join(self.argv)}); {self.log_path} ends with:\n{tail}"
        )

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after `grace_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the server's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server's process group at once (tests of failover)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _start_all(make: Callable[[int], ServerProcess], count: int, timeout_s: float) -> list[ServerProcess]:
    """Start `count` servers built by `make(index)`, wait until all are healthy; on any failure stop them
    all."""
    servers: list[ServerProcess] = []
    try:
        for index in range(count):
            server = make(index)
            server.start()
            servers.append(server)
        for server in servers:
            server.wait_healthy(timeout_s)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def start_embedded_servers(
    model_path: str | Path,
    num_servers: int,
    *,
    log_dir: str | Path,
    extra: Mapping[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> list[ServerProcess]:
    """Start `num_servers` embedded engines on free loopback ports and wait until all are healthy."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    def make(index: int) -> ServerProcess:
        port_file = str(log_dir / f"embedded-{index}.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        return ServerProcess(
            embedded_command(model_path, port_file=port_file, extra=extra),
            port_file=port_file,
            log_path=log_dir / f"embedded-{index}.log",
        )

    return _start_all(make, num_servers, timeout_s)


def gpu_placement(
    visible: str | None,
    *,
    device_count: int,
    trainer_gpus: int,
    num_servers: int,
    server_tp: int,
    share: bool = False,
) -> tuple[list[str], list[str]]:
    """Split one node's GPUs: the trainer's ranks take the first `trainer_gpus`, server i the next
    `server_tp` each (with `share`, the servers start from the first GPU, beside the trainer).

    Args:
        visible: `CUDA_VISIBLE_DEVICES` as the launching process sees it (ids or UUIDs, in order; None
            when unset: GPUs 0 .. device_count - 1). torchrun's local rank r uses its r-th entry.
        device_count: GPUs on the node, read only when `visible` is None.
        trainer_gpus: GPUs the trainer's ranks on this node hold (its local world size; 0 on CPU).
        share: `rollout.share_trainer_gpus`.

    Returns:
        (the trainer's ids, one `CUDA_VISIBLE_DEVICES` value per server).

    Raises:
        ValueError: they do not fit; the message counts what is needed and names the fixes.
    """
    ids = (
        [i.strip() for i in visible.split(",") if i.strip()]
        if visible is not None
        else [str(i) for i in range(device_count)]
    )
    first = 0 if share else trainer_gpus
    need = max(trainer_gpus, first + num_servers * server_tp)
    if need > len(ids):
        seen = (
            f"CUDA_VISIBLE_DEVICES={visible}"
            if visible is not None
            else f"{device_count} GPU(s), CUDA_VISIBLE_DEVICES unset"
        )
        shared = " (shared)" if share else ""
        raise ValueError(
            f"{trainer_gpus} trainer GPU(s){shared} + rollout.num_servers={num_servers} × "
            f"rollout.server_tp={server_tp} "
            f"= {need} GPUs, but this node has {len(ids)} ({seen}); lower launch.nproc_per_node, "
            "rollout.num_servers or rollout.server_tp, expose more GPUs, set rollout.share_trainer_gpus=true "
            "(servers beside the trainer on the same GPUs), or start the servers elsewhere and give "
            "rollout.server_urls"
        )
    servers = [",".join(ids[first + i * server_tp : first + (i + 1) * server_tp]) for i in range(num_servers)]
    return ids[:trainer_gpus], servers


def local_trainer_gpus(device: str) -> int:
    """GPUs the trainer's ranks hold on this node: torchrun's local world size on CUDA, else 0."""
    from rest_megatron.distributed import resolve_device

    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if resolve_device(device).type == "cuda" else 0


def start_sglang_servers(
    model_path: str | Path,
    rollout: Any,
    *,
    log_dir: str | Path,
    timeout_s: float = 900.0,
    env: Mapping[str, str] | None = None,
    trainer_gpus: int = 0,
) -> list[ServerProcess]:
    """Start `rollout.num_servers` SGLang servers (RolloutConfig) on free ports; wait for health.

    The servers get this node's GPUs after the trainer's first `trainer_gpus` (`gpu_placement`), server
    i `rollout.server_tp` of them, so they never land on a GPU a trainer rank holds.

    Raises:
        ValueError: the GPUs do not fit (before anything starts).
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    base_env = dict(os.environ if env is None else env)
    visible = base_env.get("CUDA_VISIBLE_DEVICES")
    count = 0
    if visible is None:
        import torch

        count = torch.cuda.device_count()
    _, placement = gpu_placement(
        visible,
        device_count=count,
        trainer_gpus=trainer_gpus,
        num_servers=rollout.num_servers,
        server_tp=rollout.server_tp,
        share=rollout.share_trainer_gpus,
    )
    sglang = replace(rollout, engine="sglang")

    def make(index: int) -> ServerProcess:
        port = free_port()
        cmd = server_command(sglang, model_path, port=port)
        return ServerProcess(
            cmd,
            base_url=f"http://127.0.0.1:{port}",
            log_path=log_dir / f"sglang-{index}.log",
            env={**base_env, "CUDA_VISIBLE_DEVICES": placement[index]},
        )

    return _start_all(make, rollout.num_servers, timeout_s)


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
