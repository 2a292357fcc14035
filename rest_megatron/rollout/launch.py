"""Start, health-check and stop inference servers, and place them on a node's GPUs beside the trainer.

    cmd = server_command(config.rollout, model_path, port=30000)     # rollout/server_commands.py
    with ServerProcess(cmd, base_url="http://127.0.0.1:30000", log_path="logs/sglang-0.log") as server:
        server.wait_healthy(timeout_s=600)   # raises ServerStartError with the log tail on failure

Servers run in their own process group, so stopping one stops its children (SGLang's TP workers) too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from rest_megatron.rollout.server_commands import embedded_command, server_command, vllm_env, vllm_python
from tools_sandbox.executor import die_with_parent


class ServerStartError(RuntimeError):
    """A server exited or did not become healthy in time; the message ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer `--port 0 --port-file` where the server supports it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def server_gpus(env: Mapping[str, str], rollout: Any, trainer_gpus: int) -> list[str]:
    """Each server's `CUDA_VISIBLE_DEVICES` on this node (`gpu_placement` of the servers a RolloutConfig
    asks for, after the trainer's `trainer_gpus`), from `env`'s own `CUDA_VISIBLE_DEVICES` if set."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
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
    return placement


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
    placement = server_gpus(base_env, rollout, trainer_gpus)
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
    placement: list[str | None] = [None] * rollout.num_servers
    if trainer_gpus or config.launch.device == "cuda":
        placement = list(server_gpus(base_env, rollout, trainer_gpus))

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
