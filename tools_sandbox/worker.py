"""The stateful-session worker: a warm interpreter inside the sandbox that runs tool calls.

Started by the launcher in `worker` mode; everything here runs confined. Protocol: one JSON object
per line on stdin, one reply per line on the original stdout (kept as a private descriptor; fds 0
and 1 become /dev/null so user code cannot read or forge the control channel by accident).

    {"op": "init", "envs": [{"name", "kind", "module", "attr", "config", "tools"}]}  -> {"ok": true}
    {"op": "call", "tool": "ls", "arguments": {...}, "wall_s": 10, "cpu_s": 10}
        -> {"ok": bool, "output": str, "error": str | null, "truncated": bool}
    {"op": "describe", "module": "my_pkg.tools"}  -> {"ok": true, "name": str, "tools": [schema]}

During a call, fds 1 and 2 go to a pipe read by a thread up to the output cap. A call that runs
past its wall or CPU budget gets `CallTimeout` raised in it (SIGALRM / SIGXCPU) and the session
lives on; code that ignores that is killed by the service, which ends the session.

Every process a call starts dies when the call ends: the worker is a child subreaper, so orphans
of its children (double forks, `nohup ... &`) are re-parented to it, and after each call it
SIGKILLs and reaps its children until none is left. Their CPU time then counts in
RUSAGE_CHILDREN, so the session's CPU budget in all covers every process it ran.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import os
import resource
import signal
import sys
import threading
import traceback
from typing import Any

from tools_sandbox.limits import truncation_marker
from tools_sandbox.tools.schema import function_schema

_CAPTURE_JOIN_S = 0.2  # how long to wait for output from processes the call left running
_MAX_ERROR_CHARS = 4096


class CallTimeout(BaseException):  # noqa: N818 - BaseException so `except Exception` cannot swallow it
    """Raised inside a tool call that exceeded its wall-clock or CPU budget."""


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:  # a thread that just ended
            pass
    return pids


def end_children() -> None:
    """SIGKILL and reap every process this worker started, and their orphans (it is a subreaper)."""
    while pids := _children():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)  # by then its own orphans are already re-parented to us
            except ChildProcessError:  # user code reaped it first
                pass
    try:  # zombies that user code left unreaped
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _cpu_used() -> float:
    """CPU seconds of this worker and every process it ran and reaped."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _on_timeout(signum: int, _frame: Any) -> None:
    raise CallTimeout("wall-clock limit" if signum == signal.SIGALRM else "CPU-time limit")


class _Capture:
    """Route fds 1 and 2 into a pipe for the duration of a call; keep at most `cap` bytes."""

    def __init__(self, cap: int, devnull: int) -> None:
        self.cap, self.devnull = cap, devnull
        self.kept, self.dropped = bytearray(), 0
        self.lock = threading.Lock()

    def __enter__(self) -> _Capture:
        sys.stdout.flush()
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.thread = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self.thread.start()
        return self

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                with self.lock:
                    room = self.cap - len(self.kept)
                    if room > 0:
                        self.kept += chunk[:room]
                    self.dropped += max(0, len(chunk) - max(room, 0))

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - user code may have closed or replaced the stream
                pass
        os.dup2(self.devnull, 1)
        os.dup2(self.devnull, 2)
        self.thread.join(_CAPTURE_JOIN_S)

    def text(self) -> tuple[str, bool]:
        with self.lock:
            out = self.kept.decode("utf-8", errors="replace")
            return (out + truncation_marker(self.dropped, self.cap) if self.dropped else out), bool(
                self.dropped
            )


class PythonEnv:
    """The Python interpreter tool: cells share one globals dict for the life of the session."""

    def __init__(self, spec: dict) -> None:
        self.globals: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.tools = {"python"}

    def call(self, tool: str, arguments: dict) -> tuple[bool, str | None, str | None]:
        code = arguments.get("code")
        if not isinstance(code, str):
            return False, None, "argument 'code' must be a string of Python source"
        try:
            tree = ast.parse(code, "<cell>", "exec")
        except SyntaxError as exc:
            traceback.print_exception(type(exc), exc, None)
            return False, None, f"SyntaxError: {exc.msg} (line {exc.lineno})"
        # Like a REPL: a trailing expression's value is printed.
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        try:
            exec(compile(tree, "<cell>", "exec"), self.globals)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.globals)
                if value is not None:
                    print(repr(value))
        except SystemExit as exc:
            return exc.code in (None, 0), None, None if exc.code in (None, 0) else f"SystemExit: {exc.code}"
        except Exception as exc:  # noqa: BLE001 - the error is the tool's output
            sys.stdout.flush()  # keep what the cell printed before the traceback
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
            return False, None, f"{type(exc).__name__}: {exc}"
        return True, None, None


class ObjectEnv:
    """Tools that are methods of one object (BFCL classes, a user ENVIRONMENT) or plain functions."""

    def __init__(self, spec: dict) -> None:
        module = importlib.import_module(spec["module"])
        config = copy.deepcopy(spec.get("config") or {})
        self.functions: dict[str, Any] = {}
        if spec["kind"] == "bfcl":
            instance = getattr(module, spec["attr"])()
            if hasattr(instance, "_load_scenario") and spec["attr"] != "MathAPI":
                long_context = bool(config.pop("long_context", False)) if isinstance(config, dict) else False
                instance._load_scenario(config, long_context=long_context)
            self.functions = {name: getattr(instance, name) for name in spec["tools"]}
        else:
            environment = getattr(module, "ENVIRONMENT", None)
            if environment is not None:
                instance = environment(**config)
                self.functions.update({n: getattr(instance, n) for n in _public_methods(environment)})
            for fn in getattr(module, "TOOLS", []):
                self.functions[function_schema(fn)["name"]] = fn
        self.tools = set(self.functions)

    def call(self, tool: str, arguments: dict) -> tuple[bool, str | None, str | None]:
        try:
            result = self.functions[tool](**arguments)
        except Exception as exc:  # noqa: BLE001 - the error is the tool's output
            return False, None, f"{type(exc).__name__}: {exc}"
        if isinstance(result, str):
            return True, result, None
        return True, json.dumps(result, ensure_ascii=False, default=repr), None


def _public_methods(cls: type) -> list[str]:
    names = getattr(cls, "TOOLS", None)
    if names:
        return list(names)
    return [n for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")]


def describe(module_name: str) -> dict:
    """Import a user tool module and return its environment name and tool schemas."""
    module = importlib.import_module(module_name)
    schemas = [function_schema(fn) for fn in getattr(module, "TOOLS", [])]
    environment = getattr(module, "ENVIRONMENT", None)
    if environment is not None:
        schemas += [function_schema(getattr(environment, n), n) for n in _public_methods(environment)]
    if not schemas:
        raise ValueError(
            f"module {module_name!r} defines no tools; give it TOOLS = [functions] or an "
            "ENVIRONMENT class whose public methods are the tools"
        )
    return {"ok": True, "name": getattr(module, "ENV_NAME", module_name.rsplit(".", 1)[-1]), "tools": schemas}


class Worker:
    """Holds the session's environments and answers control messages."""

    def __init__(self, devnull: int) -> None:
        self.devnull = devnull
        self.envs: list[Any] = []
        self.stdout, self.stderr = sys.stdout, sys.stderr

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "init":
            for spec in msg.get("envs", []):
                self.envs.append(PythonEnv(spec) if spec["kind"] == "python" else ObjectEnv(spec))
            return {"ok": True, "tools": sorted(t for env in self.envs for t in env.tools)}
        if op == "describe":
            return describe(msg["module"])
        if op == "call":
            return self.call(msg)
        return {"ok": False, "error": f"unknown op {op!r}"}

    def call(self, msg: dict) -> dict:
        tool, arguments = msg.get("tool"), msg.get("arguments")
        env = next((e for e in self.envs if tool in e.tools), None)
        if env is None:
            return {"ok": False, "output": "", "error": f"tool {tool!r} is not in this session"}
        if not isinstance(arguments, dict):
            return {"ok": False, "output": "", "error": "arguments must be a JSON object"}
        for sig in (signal.SIGALRM, signal.SIGXCPU):
            signal.signal(sig, _on_timeout)  # user code may have replaced them in an earlier call
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        if cpu_hard != resource.RLIM_INFINITY and _cpu_used() >= cpu_hard:
            return {
                "ok": False,
                "output": "",
                "error": f"the session used its {cpu_hard} CPU seconds in all "
                "(its processes included); create a new session",
            }
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_soft = int(usage.ru_utime + usage.ru_stime + float(msg.get("cpu_s", 10))) + 1
        if cpu_hard != resource.RLIM_INFINITY:
            cpu_soft = min(cpu_soft, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
        capture = _Capture(int(msg.get("output_bytes", 1 << 18)), self.devnull)
        ok, result, error = False, None, None
        with capture:
            try:
                signal.setitimer(signal.ITIMER_REAL, float(msg.get("wall_s", 10)))
                try:
                    ok, result, error = env.call(tool, arguments)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except CallTimeout as exc:
                ok, error = False, f"timeout: the call hit its {exc}; the session is still usable"
            finally:
                end_children()  # before the capture ends: their pipe ends close with them
        sys.stdout, sys.stderr = self.stdout, self.stderr
        printed, truncated = capture.text()
        # Python cells answer with what they printed; function tools with their return value.
        output = printed if result is None else result
        encoded = output.encode()
        if len(encoded) > capture.cap:
            output = encoded[: capture.cap].decode(errors="replace") + truncation_marker(
                len(encoded) - capture.cap, capture.cap
            )
            truncated = True
        if error is not None and len(error) > _MAX_ERROR_CHARS:  # e.g. an exception with a huge message
            error = error[:_MAX_ERROR_CHARS] + " [... error message truncated ...]"
        return {"ok": ok, "output": output, "error": error, "truncated": truncated}


def serve(preload: list[str] | None = None) -> None:
    """Run the control loop until stdin closes; import `preload` modules first (warm start)."""
    for module in preload or []:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a missing optional module only costs time later
            pass
    control_in = os.fdopen(os.dup(0), "rb")
    control_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    # Interleave prints and tracebacks in the order they happen, as a terminal would.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=True)
    _become_subreaper()
    worker = Worker(devnull)
    for line in control_in:
        try:
            reply = worker.handle(json.loads(line))
        except CallTimeout as exc:
            reply = {"ok": False, "output": "", "error": f"timeout: {exc}"}
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply = {"ok": False, "output": "", "error": f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]}
        control_out.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
        control_out.flush()
