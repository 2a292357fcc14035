"""The in-sandbox layers on their own, each in a child process that confines only itself.

These are the harmless probes that come before any hostile test: signal 0 (`kill(-1, 0)` delivers
nothing even when allowed), connection attempts to a listener this test owns, writes into temp dirs.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tools_sandbox.backends.common import PACKAGE_DIR
from tools_sandbox.confine import landlock, seccomp

pytestmark = pytest.mark.timeout(60)


def _child(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(PACKAGE_DIR.parent)!r})\n" + code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_filter_assembles_for_each_architecture(machine: str) -> None:
    program = seccomp.build_filter(machine)
    assert len(program) % 8 == 0 and 40 < len(program) // 8 < 256
    # The last instruction kills (foreign arch), and some instruction returns ALLOW.
    codes = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert codes[-1] == (0x06, 0, 0, 0x80000000)
    assert (0x06, 0, 0, 0x7FFF0000) in codes


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no seccomp syscall table"):
        seccomp.build_filter("riscv64")


@pytest.mark.skipif(not seccomp.supported(), reason="no syscall table for this architecture")
def test_seccomp_denies_sockets_kill_minus_one_setsid_and_namespaces_but_not_ordinary_work() -> None:
    result = _child("""
import ctypes, errno, json, os, socket, subprocess
from tools_sandbox.confine import seccomp
seccomp.install()
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "allowed"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
attempt("socket", lambda: socket.socket())
attempt("kill_minus_one", lambda: os.kill(-1, 0))
attempt("kill_group", lambda: os.killpg(os.getpgrp(), 0))
attempt("kill_self", lambda: os.kill(os.getpid(), 0))
attempt("setsid", os.setsid)
attempt("setpgid", lambda: os.setpgid(0, 0))
libc = ctypes.CDLL(None, use_errno=True)
out["unshare_user"] = libc.unshare(0x10000000) == 0 or errno.errorcode[ctypes.get_errno()]
attempt("socketpair", socket.socketpair)
out["subprocess"] = subprocess.run(["true"]).returncode
print(json.dumps(out))
""")
    assert result == {
        "socket": "EPERM",
        "kill_minus_one": "EPERM",
        "kill_group": "EPERM",
        "kill_self": "allowed",
        "setsid": "EPERM",
        "setpgid": "EPERM",
        "unshare_user": "EPERM",
        "socketpair": "allowed",
        "subprocess": 0,
    }


@pytest.mark.skipif(landlock.abi() < 1, reason="kernel without Landlock")
def test_landlock_allows_writes_only_beneath_the_given_directory(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = _child(f"""
import json, os, socket
from tools_sandbox.confine import landlock
abi = landlock.restrict([{str(inside)!r}])
out = {{"abi": abi}}
for label, path in (("inside", {str(inside / "f")!r}), ("outside", {str(outside / "f")!r})):
    try:
        open(path, "w").write("x"); out[label] = "wrote"
    except OSError as exc:
        out[label] = "denied"
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2); out["tcp"] = "connected"
except OSError:
    out["tcp"] = "denied"
try:
    os.kill({os.getpid()}, 0); out["signal_parent"] = "allowed"
except OSError:
    out["signal_parent"] = "denied"
print(json.dumps(out))
""")
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert result["inside"] == "wrote" and result["outside"] == "denied"
    assert (inside / "f").exists() and not (outside / "f").exists()
    if result["abi"] >= 4:
        assert result["tcp"] == "denied"
    if result["abi"] >= 6:
        assert result["signal_parent"] == "denied"


def test_launcher_refuses_to_run_user_code_as_root_without_a_uid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only meaningful for a root service")
    config = {
        "workdir": str(tmp_path),
        "rlimits": {"cpu": 5, "as": 1 << 30, "nproc": 64, "fsize": 1 << 20, "nofile": 64},
        "uid": None,
        "package_parent": str(PACKAGE_DIR.parent),
        "mode": "exec",
        "argv": ["/bin/true"],
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(PACKAGE_DIR / "confine" / "launcher.py"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 125
    assert "refusing to run sandboxed code as root" in done.stderr
