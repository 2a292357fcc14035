"""Run a function on N real gloo ranks, reusing the ranks across calls.

Each fresh launch of torch + megatron-core costs 15–25 s of imports, so tests and benchmarks share
long-lived worker pools: `GlooPool(4).run(fn, *args)` runs the module-level function `fn` on every
rank (torch.distributed already initialized, gloo, world size N, CPU shims applied) and returns the
per-rank results in rank order.

Failure handling, so a broken test fails fast and says where:
- an exception on any rank is re-raised in the caller with every failing rank's traceback;
- every collective times out after `collective_timeout_s`, and the whole call after `timeout_s`;
  on a timeout each rank's Python stack is dumped (faulthandler) into the error message;
- after any failure the pool is torn down and restarted on the next call, because the surviving
  ranks may be stuck in a collective;
- after every call each rank destroys the Megatron layout the call built, so a rank's threads and
  idle CPU stay flat however many tests it serves.

`fn` is pickled by reference, so it must be importable (a module-level function), and its return
value must be picklable (return CPU tensors or plain Python values).
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any


class DistributedRunError(RuntimeError):
    """A function failed or hung on one or more ranks; the message holds each rank's report."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_main(
    rank: int, world_size: int, port: int, conn: Connection, log_path: str, collective_timeout_s: float
) -> None:
    log = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the worker
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # megatron-core warns on import that Apex/Transformer Engine are absent; on CPU that is expected.
    warnings.filterwarnings("ignore", message=r".*(Apex|Transformer Engine).*not installed")
    import torch

    torch.set_num_threads(1)
    from rest_megatron.distributed import init_distributed

    init_distributed(
        backend="gloo",
        device="cpu",
        rank=rank,
        world_size=world_size,
        init_method=f"tcp://127.0.0.1:{port}",
        timeout_s=collective_timeout_s,
    )
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        fn, args, kwargs = pickle.loads(message)
        if fn is None:
            return
        try:
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
            reply = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        _destroy_call_groups()
        try:
            payload = pickle.dumps(reply)
        except Exception as exc:  # noqa: BLE001
            payload = pickle.dumps(("error", f"return value of {fn.__qualname__} is not picklable: {exc}"))
        conn.send_bytes(payload)


def _destroy_call_groups() -> None:
    """Free the Megatron layout the call built (its groups are rebuilt by the next `init_model_parallel`).

    Each live gloo group keeps its own threads polling: left alone, a rank that served a few hundred
    tests held ~840 threads and burned a fifth of a core while idle. Groups a test module creates
    itself and reuses across calls (a module-level cache) are left alone: they are few and bounded.
    """
    if "megatron.core.parallel_state" in sys.modules:
        from rest_megatron.distributed import destroy_model_parallel

        destroy_model_parallel()


class GlooPool:
    """N long-lived gloo ranks on this machine (127.0.0.1 only)."""

    def __init__(self, world_size: int, *, timeout_s: float = 600.0, collective_timeout_s: float = 120.0):
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.collective_timeout_s = collective_timeout_s
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._log_dir = Path(tempfile.mkdtemp(prefix=f"gloo{world_size}-"))

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        port = _free_port()
        for rank in range(self.world_size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(rank, self.world_size, port, child, str(self._log(rank)), self.collective_timeout_s),
                daemon=False,  # checkpoint saving starts helper processes; daemons may not
                name=f"gloo-rank{rank}",
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        self._collect(deadline=time.monotonic() + max(self.timeout_s, 300.0), what="startup")

    def _log(self, rank: int) -> Path:
        return self._log_dir / f"rank{rank}.log"

    def _log_tail(self, rank: int, chars: int = 4000) -> str:
        try:
            return self._log(rank).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _collect(self, deadline: float, what: str) -> list[Any]:
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        pending = dict(enumerate(self._conns))
        while pending:
            # Once one rank failed, the others get a short grace period: they are likely blocked in
            # a collective that will never complete.
            limit = deadline if not errors else min(deadline, time.monotonic() + 10.0)
            ready = wait(list(pending.values()), timeout=max(0.0, limit - time.monotonic()))
            if not ready:
                break
            for rank, conn in list(pending.items()):
                if conn not in ready:
                    continue
                del pending[rank]
                try:
                    status, value = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    status, value = "error", f"rank died (exit code {self._procs[rank].exitcode})"
                if status == "error":
                    errors[rank] = value
                else:
                    results[rank] = value
        if not errors and not pending:
            return [results[rank] for rank in range(self.world_size)]
        for rank in pending:  # hung: ask for a stack dump before killing
            if self._procs[rank].is_alive():
                os.kill(self._procs[rank].pid, signal.SIGUSR1)
        time.sleep(0.5 if pending else 0.0)
        report = [f"{what} failed on {self.world_size} gloo ranks"]
        for rank, text in sorted(errors.items()):
            report.append(
                f"--- rank {rank} raised:\n{text}\n--- rank {rank} stderr tail:\n{self._log_tail(rank)}"
            )
        for rank in sorted(pending):
            report.append(
                f"--- rank {rank} did not finish in time; its stacks and stderr:\n{self._log_tail(rank)}"
            )
        self.close()
        raise DistributedRunError("\n".join(report))

    def run(
        self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run `fn(*args, **kwargs)` on every rank and return the results in rank order."""
        if not self._procs:
            self._start()
        message = pickle.dumps((fn, args, kwargs))
        for conn in self._conns:
            conn.send_bytes(message)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        return self._collect(deadline, what=f"{getattr(fn, '__qualname__', fn)}")

    def close(self) -> None:
        """Stop the ranks (gracefully, then by force)."""
        for conn in self._conns:
            try:
                conn.send_bytes(pickle.dumps((None, (), {})))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self) -> GlooPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
