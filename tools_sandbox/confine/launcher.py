"""The first program inside every sandbox: confine this process, then run the call.

Invoked as `python -I -S -B launcher.py '<json config>'` by every backend, so that all backends
share one implementation of the caps. Order matters:

1. rlimits (CPU, address space, processes, file size, open files, no core dumps);
2. drop to the call's own unprivileged uid when started as root (the uid pool in
   `backends/uids.py` gives each concurrent call its own uid, so RLIMIT_NPROC is per call and a
   stray `kill -1` can only reach the call's own processes);
3. parent-death signal (set after the uid change, which clears it);
4. Landlock (the rlimit fallback's read-only view), then seccomp (every backend);
5. run: `exec` an argv, run a Python file in this interpreter, or serve a stateful session.

Exit status 125 with a message on stderr means the sandbox itself could not be set up.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

SETUP_FAILED = 125
NICENESS = 5
"""Sandboxed code runs this much below the service's CPU priority, so busy calls never starve the
event loop that answers /health and every other client (unprivileged code cannot undo it)."""


def _fail(message: str) -> None:
    os.write(2, f"sandbox setup failed: {message}\n".encode())
    os._exit(SETUP_FAILED)


def _count_processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _apply_rlimits(limits: dict, nproc_shared_with_uid: bool) -> None:
    nproc = int(limits["nproc"])
    if nproc_shared_with_uid:
        # Same uid as the service (non-root fallback): RLIMIT_NPROC counts all of its processes.
        nproc += _count_processes_of(os.getuid())
    cpu_soft = int(limits["cpu"])
    cpu_hard = int(limits.get("cpu_hard", cpu_soft + 1))
    for name, soft, hard in (
        ("RLIMIT_CPU", cpu_soft, cpu_hard),
        ("RLIMIT_AS", int(limits["as"]), int(limits["as"])),
        ("RLIMIT_NPROC", nproc, nproc),
        ("RLIMIT_FSIZE", int(limits["fsize"]), int(limits["fsize"])),
        ("RLIMIT_NOFILE", int(limits["nofile"]), int(limits["nofile"])),
        ("RLIMIT_CORE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        _fail(f"could not drop to uid {uid}")


def _set_parent_death_signal() -> None:
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _run_python_file(path: str) -> None:
    """Run `path` as `__main__` in this interpreter, saving a second interpreter start."""
    import traceback
    import types

    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path[0:0] = [os.path.dirname(os.path.abspath(path))]
    with open(path, "rb") as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: B036 - report like the interpreter does, then exit 1
        # Skip this launcher frame so the traceback starts in the user's code.
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


def _read_order() -> dict:
    """Deferred mode: read one JSON line from fd 0, byte by byte, so that the bytes after it stay
    unread: they are the call's stdin."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            os._exit(0)  # the service discarded this pre-started sandbox
        line += chunk
        if len(line) > 1 << 20:
            _fail("order line too long")
    return json.loads(line)


def _narrow_limits(rlimits: dict) -> None:
    """Lower (never raise) CPU and memory caps to the ones of the call that arrived."""
    if "cpu" in rlimits:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + int(rlimits["cpu"])
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft, soft + 1 if hard == resource.RLIM_INFINITY else min(soft + 1, hard))
        )
    if "as" in rlimits:
        current, _ = resource.getrlimit(resource.RLIMIT_AS)
        value = int(rlimits["as"]) if current == resource.RLIM_INFINITY else min(int(rlimits["as"]), current)
        resource.setrlimit(resource.RLIMIT_AS, (value, value))


def _confine(config: dict) -> None:
    os.chdir(config["workdir"])
    os.umask(0o022)
    os.nice(NICENESS)
    _apply_rlimits(config["rlimits"], bool(config.get("nproc_shared_with_uid")))
    if os.getuid() == 0 and config.get("uid") is not None:
        _drop_privileges(int(config["uid"]), int(config["gid"]))
    elif os.getuid() == 0:
        _fail("refusing to run sandboxed code as root; the backend must give a uid")
    if config.get("pdeathsig"):  # namespace backends have bwrap/nsjail do this
        _set_parent_death_signal()
    sys.path.insert(0, config["package_parent"])
    if config.get("landlock"):
        from tools_sandbox.confine import landlock

        landlock.restrict(list(config["landlock"]))
    if config.get("seccomp"):  # otherwise the backend installed it (bwrap --seccomp) or it is off
        from tools_sandbox.confine import seccomp

        seccomp.install()


def main(argv: list[str]) -> None:
    """Confine this process as `argv[1]` (JSON) says, then run the call."""
    try:
        config = json.loads(argv[1])
        _confine(config)
    except Exception as exc:  # noqa: BLE001 - any setup error must stop the call before user code
        _fail(f"{type(exc).__name__}: {exc}")
    if config.get("site"):
        import site

        site.main()
    # Site-packages appended directly: processing .pth files (site.main) costs ~10 ms per call.
    sys.path.extend(config.get("site_dirs", []))
    sys.path[0:0] = list(config.get("sys_path", []))
    run = config
    if config["mode"] == "deferred":
        # A pre-started sandbox: confined already, it waits for the call (saves the start-up time).
        run = _read_order()
        _narrow_limits(run.get("rlimits", {}))
    mode = run["mode"]
    if mode == "exec":
        os.execvp(run["argv"][0], run["argv"])
    elif mode == "python":
        _run_python_file(run["path"])
    elif mode == "worker":
        from tools_sandbox.worker import serve

        serve(run.get("preload", []))
    else:
        _fail(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
