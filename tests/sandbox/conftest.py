"""Fixtures for the sandbox tests: real servers on loopback ports, one per backend variant.

Every server is a real `python -m tools_sandbox.server` subprocess bound to 127.0.0.1 with small
limits, so hostile cases end in seconds. Variants:

- `bubblewrap`, `rlimit`: the backends as shipped;
- `bubblewrap-noseccomp`, `rlimit-noseccomp`: the same without the seccomp filter, to show that the
  other layer (namespaces; per-call uid, Landlock) contains a property on its own.

The hostile tests need root (per-call uids; the fallback claims kill/background containment only
with them) and skip without it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools_sandbox.backends import bubblewrap
from tools_sandbox.backends.rlimit import RlimitBackend
from tools_sandbox.backends.uids import DEFAULT_UID_BASE
from tools_sandbox.client import LocalServer, SandboxClient, local_sandbox_server

SMALL_LIMITS = [
    "--wall-s",
    "3",
    "--cpu-s",
    "2",
    "--memory-mb",
    "256",
    "--max-processes",
    "32",
    "--output-bytes",
    "65536",
    "--file-size-mb",
    "8",
    "--max-concurrency",
    "4",
    "--queue-size",
    "1024",
    "--warm-workers",
    "2",
]
IS_ROOT = os.geteuid() == 0


def rlimit_python() -> str | None:
    """An interpreter the per-call uids can run (a pyenv under /root is not one), or None."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and RlimitBackend(python=candidate).probe()[0]:
            return candidate
    return None


def variant_args(variant: str) -> list[str]:
    """Server arguments for a backend variant; skips the test when it cannot run here."""
    backend, _, flag = variant.partition("-")
    args = ["--backend", backend]
    if backend == "bubblewrap":
        ok, detail = bubblewrap.probe()
        if not ok:
            pytest.skip(f"bubblewrap unavailable: {detail}")
    else:
        if not IS_ROOT:
            pytest.skip(
                "the rlimit fallback's kill/background containment needs a root service (per-call uids)"
            )
        python = rlimit_python()
        if python is None:
            pytest.skip(
                f"the rlimit backend cannot run here: {RlimitBackend(python='/usr/bin/python3').probe()[1]}"
            )
        args += ["--sandbox-python", python, "--no-bfcl"]
    if flag == "noseccomp":
        args.append("--disable-seccomp")
    return args


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`server_factory(variant, *extra_args)` starts (and caches per module) a server."""
    servers: dict[tuple, LocalServer] = {}
    stacks = []

    def get(variant: str, *extra: str, secret: str | None = None) -> LocalServer:
        key = (variant, extra, secret)
        if key not in servers:
            log = tmp_path_factory.mktemp("server") / "server.log"
            cm = local_sandbox_server(
                [*variant_args(variant), *SMALL_LIMITS, *extra], secret=secret, log_path=str(log)
            )
            servers[key] = cm.__enter__()
            stacks.append(cm)
        return servers[key]

    yield get
    for cm in reversed(stacks):
        cm.__exit__(None, None, None)


def run(coro):  # noqa: ANN001, ANN201 - tiny helper for sync tests
    """Run a coroutine to completion in a fresh event loop."""
    return asyncio.run(coro)


async def run_code(server: LocalServer, code: str, language: str = "python", **kwargs) -> dict:
    """POST /run_code through the real client."""
    async with SandboxClient(server.base_url, secret=server.secret, timeout_s=60) as client:
        return await client.run_code(code, language=language, **kwargs)


def assert_healthy(server: LocalServer) -> None:
    """The service answers /health and still runs code correctly."""
    health = httpx.get(f"{server.base_url}/health", timeout=10, trust_env=False)
    assert health.status_code == 200, health.text
    reply = run(run_code(server, "print(6 * 7)"))
    assert reply["status"] == "Success", reply
    assert reply["run_result"]["stdout"] == "42\n"


def processes_of(uid: int) -> list[str]:
    """Every live process on this machine owned by `uid`, as "pid: command line".

    Zombies are left out: they are already dead and only wait for init to reap them.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.stat(f"/proc/{entry}").st_uid == uid and state not in ("Z", "X"):
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                    found.append(f"{entry}: {cmdline.decode(errors='replace')[:200]}")
            except FileNotFoundError:
                pass
    return found


def pool_uid_processes() -> int:
    """How many processes run under any sandbox pool uid (warm workers included)."""
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit() and _uid_in_pool(entry))


def _uid_in_pool(pid: str) -> bool:
    try:
        return DEFAULT_UID_BASE <= os.stat(f"/proc/{pid}").st_uid < DEFAULT_UID_BASE + 256 * 65_536
    except FileNotFoundError:
        return False


def world_readable_tool_dir() -> Path:
    """A new directory with a trivial user tool module, readable by the per-call uids.

    It is made with mkdtemp directly under /tmp, not under pytest's tmp_path: pytest keeps
    /tmp/pytest-of-<user> at mode 0700 (and resets it when another pytest run starts), which would
    hide the module from the sandbox uids.
    """
    root = Path(tempfile.mkdtemp(prefix="rest-sandbox-test-", dir="/tmp"))
    root.chmod(0o755)
    (root / "probe_tools.py").write_text(
        'def probe_echo(text: str) -> str:\n    """Echo text."""\n    return text\n\nTOOLS = [probe_echo]\n'
    )
    (root / "probe_tools.py").chmod(0o644)
    _made_dirs.append(root)
    return root


_made_dirs: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remove_made_dirs() -> Iterator[None]:
    yield
    for path in _made_dirs:
        shutil.rmtree(path, ignore_errors=True)


def host_process_count() -> int:
    """Processes on this machine, from /proc."""
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


def scratch_mounts() -> int:
    """Scratch tmpfs mounts of sandbox services on this machine (one per live call or session)."""
    return sum(
        1 for line in Path("/proc/self/mounts").read_text().splitlines() if "/call-" in line.split()[1]
    )
