"""Start, health-check and stop local inference servers (SGLang, vLLM or the embedded engine).

    cmd = sglang_command(model_path, port=30000, tp=2, mem_fraction_static=0.7,
                         tool_call_parser="qwen25", extra={"context_length": 8192})
    with ServerProcess(cmd, base_url="http://127.0.0.1:30000", log_path="logs/sglang-0.log") as server:
        server.wait_healthy(timeout_s=600)   # raises ServerStartError with the log tail on failure

Extra SGLang flags come from the recipe's `rollout.sglang` mapping, verbatim (STYLE.md: we never
re-declare upstream flags): `mem_fraction_static: 0.7` -> `--mem-fraction-static 0.7`,
`enable_metrics: true` -> `--enable-metrics`, `false`/null -> omitted, a list -> the flag then each
item (argparse nargs), a dict -> one JSON argument. Servers run in their own process group so
stopping one stops its children (SGLang's TP workers) too.
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
from pathlib import Path
from typing import Any

import httpx

from tools_sandbox.executor import die_with_parent

# Flags the launcher owns: set them through the keyword arguments, not the passthrough mapping.
_OWNED = {"model_path": "the model path", "host": "host", "port": "port", "tp_size": "rollout.server_tp",
          "tp": "rollout.server_tp"}


class ServerStartError(RuntimeError):
    """A server exited or did not become healthy in time; the message ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer `--port 0 --port-file` where the server supports it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def passthrough_flags(options: Mapping[str, Any], *, owned: Mapping[str, str] = _OWNED) -> list[str]:
    """`{"mem_fraction_static": 0.7, "enable_metrics": True}` -> `["--mem-fraction-static", "0.7", "--enable-metrics"]`."""
    flags: list[str] = []
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name in owned:
            raise ValueError(f"rollout.sglang.{key} is set by the launcher; use {owned[name]} instead")
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
    python: str = sys.executable,
) -> list[str]:
    """The argv that launches one SGLang server.

    Args:
        mem_fraction_static: GPU memory fraction for weights and KV cache (None: SGLang's default).
        tool_call_parser: SGLang's parser for its OpenAI API (e.g. "qwen25"); our rollout parses tool
            calls from token IDs itself, so this only matters for serving.
        extra: `rollout.sglang` passthrough flags.
    """
    if tp < 1:
        raise ValueError(f"rollout.server_tp must be >= 1, got {tp}")
    extra = dict(extra or {})
    for name, value in (("mem_fraction_static", mem_fraction_static), ("tool_call_parser", tool_call_parser)):
        if value is not None and extra.get(name) not in (None, value):
            raise ValueError(f"{name} is given twice ({value!r} and rollout.sglang.{name}={extra[name]!r}); keep one")
        if value is not None:
            extra[name] = value
    return [python, "-m", "sglang.launch_server", "--model-path", str(model_path), "--host", host,
            "--port", str(port), "--tp-size", str(tp), *passthrough_flags(extra)]


def embedded_command(model_path: str | Path, *, port: int = 0, host: str = "127.0.0.1",
                     port_file: str | None = None, extra: Mapping[str, Any] | None = None,
                     python: str = sys.executable) -> list[str]:
    """The argv that launches one embedded CPU engine (`rest-megatron rollout-server`)."""
    cmd = [python, "-m", "rest_megatron.rollout.embedded_server", "--model", str(model_path), "--host", host,
           "--port", str(port)]
    if port_file:
        cmd += ["--port-file", port_file]
    return cmd + passthrough_flags(extra or {}, owned={"model": "the model path", "host": "host", "port": "port"})


VLLM_OWNED = {"model": "model.path", "host": "host", "port": "port", "tensor_parallel_size": "rollout.server_tp",
              "tp": "rollout.server_tp", "worker_extension_cls": "the launcher (the weight-update extension)",
              "dtype": "model.dtype"}
"""vLLM flags the launcher sets; `logprobs_mode` may be given but only as processed_logprobs."""


def vllm_server_args(config: Any) -> list[str]:
    """The vLLM flags a training run needs (Config): log-probs of the tempered distribution, the
    weight-update worker extension, TP and dtype, then `rollout.vllm` verbatim."""
    from rest_megatron.rollout.clients.vllm import WORKER_EXTENSION

    extra = dict(config.rollout.vllm)
    mode = extra.pop("logprobs_mode", "processed_logprobs")
    if mode != "processed_logprobs":
        raise ValueError(f"rollout.vllm.logprobs_mode={mode!r}: the trainer compares sampling log-probs with "
                         "its log-probs of the tempered distribution; drop it or use processed_logprobs")
    return ["--logprobs-mode", "processed_logprobs", "--worker-extension-cls", WORKER_EXTENSION,
            "--tensor-parallel-size", str(config.rollout.server_tp), "--dtype", config.model.dtype,
            *passthrough_flags(extra, owned=VLLM_OWNED)]


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


def start_vllm_servers(model_path: str | Path, config: Any, *, log_dir: str | Path, timeout_s: float = 900.0,
                       env: Mapping[str, str] | None = None) -> list[ServerProcess]:
    """Start `rollout.num_servers` vLLM OpenAI servers for training (Config) and wait for health."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    flags = vllm_server_args(config)
    python = vllm_python(config.rollout.vllm_python)

    def make(index: int) -> ServerProcess:
        port = free_port()
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
               "--host", "127.0.0.1", "--port", str(port), *flags]
        server_env = vllm_env(os.environ if env is None else env, config.launch.device)
        if config.rollout.num_servers > 1 and config.launch.device == "cuda" and "CUDA_VISIBLE_DEVICES" not in (env or {}):
            first = index * config.rollout.server_tp
            server_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(first, first + config.rollout.server_tp))
        return ServerProcess(cmd, base_url=f"http://127.0.0.1:{port}", log_path=log_dir / f"vllm-{index}.log",
                             env=server_env)

    return _start_all(make, config.rollout.num_servers, timeout_s)


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

    def __init__(self, argv: Sequence[str], *, base_url: str | None = None, port_file: str | None = None,
                 host: str = "127.0.0.1", log_path: str | Path | None = None, env: Mapping[str, str] | None = None) -> None:
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
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, preexec_fn=die_with_parent)

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
                raise ServerStartError(f"the server exited with status {code} before becoming healthy "
                                       f"(command: {' '.join(self.argv)}); {self.log_path} ends with:\n"
                                       f"{log_tail(self.log_path)}")
            if self._base_url is not None or (self.port_file and os.path.exists(self.port_file)):
                try:
                    if httpx.get(f"{self.base_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                        return self.base_url
                except httpx.HTTPError:
                    pass
            time.sleep(poll_s)
        tail = log_tail(self.log_path)
        self.stop()
        raise ServerStartError(f"the server did not become healthy within {timeout_s:g} s (command: "
                               f"{' '.join(self.argv)}); {self.log_path} ends with:\n{tail}")

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
    """Start `count` servers built by `make(index)`, wait until all are healthy; on any failure stop them all."""
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


def start_embedded_servers(model_path: str | Path, num_servers: int, *, log_dir: str | Path,
                           extra: Mapping[str, Any] | None = None, timeout_s: float = 300.0) -> list[ServerProcess]:
    """Start `num_servers` embedded engines on free loopback ports and wait until all are healthy."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    def make(index: int) -> ServerProcess:
        port_file = str(log_dir / f"embedded-{index}.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        return ServerProcess(embedded_command(model_path, port_file=port_file, extra=extra),
                             port_file=port_file, log_path=log_dir / f"embedded-{index}.log")

    return _start_all(make, num_servers, timeout_s)


def start_sglang_servers(model_path: str | Path, rollout: Any, *, log_dir: str | Path, timeout_s: float = 900.0,
                         env: Mapping[str, str] | None = None) -> list[ServerProcess]:
    """Start `rollout.num_servers` SGLang servers (RolloutConfig) on free ports; wait for health.

    With several servers on one node each gets its own GPUs through `CUDA_VISIBLE_DEVICES`
    (server i: GPUs i·tp ... i·tp + tp - 1), unless `env` already pins them.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    def make(index: int) -> ServerProcess:
        port = free_port()
        cmd = sglang_command(model_path, port=port, tp=rollout.server_tp, extra=rollout.sglang)
        server_env = dict(os.environ if env is None else env)
        if rollout.num_servers > 1 and "CUDA_VISIBLE_DEVICES" not in (env or {}):
            first = index * rollout.server_tp
            server_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(first, first + rollout.server_tp))
        return ServerProcess(cmd, base_url=f"http://127.0.0.1:{port}", log_path=log_dir / f"sglang-{index}.log",
                             env=server_env)

    return _start_all(make, rollout.num_servers, timeout_s)

