"""Hostile code against real servers: each case asserts containment, then that the service is healthy.

Run against bubblewrap and the rlimit fallback (the properties the fallback claims; see
tools_sandbox/README.md), and the kill / network / background cases also with seccomp disabled, to
show that the other layer holds on its own. Safety: these run as per-call unprivileged uids with
RLIMIT_NPROC, so even an escaped `kill -9 -1` or fork bomb reaches only that uid's processes;
`test_confine.py` checks those layers with harmless probes first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.conftest import (
    IS_ROOT,
    assert_healthy,
    processes_of,
    run,
    run_code,
    world_readable_tool_dir,
)
from tools_sandbox.client import SandboxClient

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not IS_ROOT, reason="hostile cases need per-call uids"),
]
VARIANTS = ["bubblewrap", "rlimit"]
LAYER_VARIANTS = [*VARIANTS, "bubblewrap-noseccomp", "rlimit-noseccomp"]


@pytest.fixture(scope="module")
def sentinel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world-writable directory holding a world-writable file, visible read-only to the sandboxes.

    File permissions alone would let the sandbox write here: only the read-only mount (bubblewrap)
    or Landlock (fallback) stop it.
    """
    root = world_readable_tool_dir()
    root.chmod(0o777)
    (root / "target.txt").write_text("original")
    (root / "target.txt").chmod(0o666)
    return root


CANARY = "canary-7f3a9c"


@pytest.fixture(scope="module")
def canary_env() -> Iterator[None]:
    """A variable in the service's environment that sandboxed code must never see."""
    os.environ["REST_SANDBOX_TEST_CANARY"] = CANARY
    yield
    os.environ.pop("REST_SANDBOX_TEST_CANARY", None)


@pytest.fixture(params=LAYER_VARIANTS)
def layered(request: pytest.FixtureRequest, server_factory, sentinel_dir: Path, canary_env: None):  # noqa: ANN001, ANN201
    return server_factory(request.param, "--tools-module", str(sentinel_dir / "probe_tools.py"))


@pytest.fixture(params=VARIANTS)
def server(request: pytest.FixtureRequest, server_factory, sentinel_dir: Path, canary_env: None):  # noqa: ANN001, ANN201
    return server_factory(request.param, "--tools-module", str(sentinel_dir / "probe_tools.py"))


def _uid_from(reply: dict) -> int:
    return int(reply["run_result"]["stdout"].splitlines()[0])


def test_infinite_loop_hits_the_cpu_limit(server) -> None:  # noqa: ANN001
    start = time.monotonic()
    reply = run(run_code(server, "while True:\n    pass\n"))
    assert reply["run_result"]["status"] == "TimeLimitExceeded", reply
    assert time.monotonic() - start < 8
    assert_healthy(server)


def test_sleeping_past_the_wall_limit_is_killed(server) -> None:  # noqa: ANN001
    start = time.monotonic()
    reply = run(run_code(server, "id -u\nsleep 100\necho woke", language="bash"))
    assert reply["run_result"]["status"] == "TimeLimitExceeded", reply
    assert "woke" not in reply["run_result"]["stdout"]
    assert time.monotonic() - start < 8
    assert processes_of(_uid_from(reply)) == []
    assert_healthy(server)


def test_fork_bomb_is_capped_and_leaves_nothing(server) -> None:  # noqa: ANN001
    reply = run(run_code(server, "id -u\n:(){ :|:& };:\nsleep 5\n", language="bash"))
    assert reply["status"] in ("Failed", "Success"), reply
    uid = _uid_from(reply)
    assert processes_of(uid) == [], "fork bomb processes survived the call"
    assert_healthy(server)


def test_memory_bomb_gets_memory_error(server) -> None:  # noqa: ANN001
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"
    reply = run(run_code(server, code))
    assert reply["status"] == "Failed"
    assert "MemoryError" in reply["run_result"]["stderr"], reply
    assert_healthy(server)


def test_100_mb_of_stdout_is_truncated_with_a_marker(server) -> None:  # noqa: ANN001
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    start = time.monotonic()
    reply = run(run_code(server, code))
    stdout = reply["run_result"]["stdout"]
    assert len(stdout) < 65536 + 200
    assert "output truncated" in stdout and str((100 << 20) - 65536) in stdout
    assert time.monotonic() - start < 20
    assert_healthy(server)


def test_no_connection_to_the_service_or_another_loopback_port(layered) -> None:  # noqa: ANN001
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    other = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for port in ({layered.port}, {other}):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=2)\n"
        "        print(port, 'CONNECTED')\n"
        "    except OSError as exc:\n"
        "        print(port, 'BLOCKED', type(exc).__name__, exc)\n"
    )
    try:
        reply = run(run_code(layered, code))
        stdout = reply["run_result"]["stdout"]
        assert "CONNECTED" not in stdout and stdout.count("BLOCKED") == 2, reply
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert_healthy(layered)


def test_file_size_limit(server) -> None:  # noqa: ANN001
    # 8 MiB cap: the write past it fails (EFBIG once SIGXFSZ is ignored) and nothing larger exists.
    code = (
        "import os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "for path in ('big.bin', '/tmp/big.bin'):\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            for _ in range(32):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "        print(path, 'WROTE')\n"
        "    except OSError as exc:\n"
        "        print(path, 'BLOCKED', exc.errno, os.path.getsize(path) if os.path.exists(path) else 0)\n"
    )
    reply = run(run_code(server, code))
    stdout = reply["run_result"]["stdout"]
    assert "WROTE" not in stdout and stdout.count("BLOCKED") == 2, reply
    assert all(int(line.split()[-1]) <= 8 << 20 for line in stdout.splitlines())
    assert_healthy(server)


def test_environment_is_scrubbed(server) -> None:  # noqa: ANN001
    assert os.environ.get("REST_SANDBOX_TEST_CANARY") == CANARY  # the service was started with it
    reply = run(run_code(server, "env; cat /proc/self/environ", language="bash"))
    assert CANARY not in reply["run_result"]["stdout"], reply
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in reply["run_result"]["stdout"]
    assert_healthy(server)


def test_etc_shadow_is_unreadable(server) -> None:  # noqa: ANN001
    reply = run(
        run_code(server, "cat /etc/shadow; python3 -c \"print(open('/etc/shadow').read())\"", language="bash")
    )
    assert "root:" not in reply["run_result"]["stdout"], reply
    assert_healthy(server)


def test_writes_outside_the_scratch_directory_fail_also_via_symlink(server, sentinel_dir: Path) -> None:  # noqa: ANN001
    target = sentinel_dir / "target.txt"
    code = (
        "import os\n"
        f"target = {str(target)!r}\n"
        "os.symlink(target, 'link')\n"
        "for label, path in (('direct', target), ('symlink', 'link'), ('create', target + '.new'),\n"
        "                    ('usr', '/usr/pwned'), ('etc', '/etc/pwned')):\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('pwned')\n"
        "        print(label, 'WROTE')\n"
        "    except OSError as exc:\n"
        "        print(label, 'BLOCKED', exc)\n"
    )
    reply = run(run_code(server, code))
    assert "WROTE" not in reply["run_result"]["stdout"], reply
    assert reply["run_result"]["stdout"].count("BLOCKED") == 5
    assert target.read_text() == "original"
    assert not (sentinel_dir / "target.txt.new").exists()
    assert not Path("/usr/pwned").exists() and not Path("/etc/pwned").exists()
    assert_healthy(server)


def test_fetch_files_does_not_follow_symlinks_out(server) -> None:  # noqa: ANN001
    reply = run(
        run_code(
            server,
            "ln -s /etc/shadow out.txt; ln -s /etc/hostname host.txt; echo ok > real.txt",
            language="bash",
            fetch_files=["out.txt", "host.txt", "real.txt"],
        )
    )
    assert set(reply["files"]) == {"real.txt"}, reply
    assert_healthy(server)


def test_kill_minus_one_reaches_only_the_call_itself(layered) -> None:  # noqa: ANN001
    async def scenario() -> tuple[dict, str]:
        async with SandboxClient(layered.base_url, timeout_s=60) as client:
            sid = await client.create_session(["python"])
            await client.call_tool("python", {"code": "x = 1"}, session_id=sid)
            reply = await client.run_code("id -u\nkill -9 -1\necho after", language="bash")
            later = await client.call_tool("python", {"code": "x"}, session_id=sid)
            await client.close_session(sid)
            return reply, later.output

    canary_pid = os.getpid()
    reply, session_output = run(scenario())
    assert session_output == "1\n", "a live session (another sandbox) was killed"
    assert os.path.exists(f"/proc/{canary_pid}")
    assert processes_of(_uid_from(reply)) == []
    assert_healthy(layered)


def test_background_processes_do_not_survive(layered) -> None:  # noqa: ANN001
    code = (
        "id -u\n"
        "nohup sleep 1000 >/dev/null 2>&1 &\n"
        "setsid sleep 1001 >/dev/null 2>&1 &\n"
        "( trap '' HUP TERM; exec sleep 1002 ) >/dev/null 2>&1 &\n"
        "python3 -c 'import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1003)' "
        ">/dev/null 2>&1 &\n"
        "sleep 0.5\necho started\n"
    )
    reply = run(run_code(layered, code, language="bash"))
    assert "started" in reply["run_result"]["stdout"], reply
    # The kernel delivers the namespace-wide SIGKILL asynchronously; under load a killed process can
    # still show in /proc for a moment after the reply. Surviving means still there seconds later.
    uid, deadline = _uid_from(reply), time.monotonic() + 3.0
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(uid) == []
    leftovers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sleep\x00100" in cmdline or b"time.sleep(1003)" in cmdline:
                leftovers.append(entry)
    assert leftovers == [], f"background processes survived: {leftovers}"
    assert_healthy(layered)
