"""Availability: no client can stall, starve or fill the service, with or without the secret.

One test (or group) per kind of attack, each against a real server on a loopback port. Every
case ends with the service's baseline checked: its descriptors, its sandbox processes and its
scratch mounts are back where they were, and it still runs code.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.sandbox.conftest import IS_ROOT, assert_healthy, pool_uid_processes, run, run_code, scratch_mounts
from tools_sandbox.client import LocalServer, SandboxClient, SandboxError

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not IS_ROOT, reason="needs per-call uids and tmpfs scratch"),
]
SECRET = "availability-secret-42"


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scratch")
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def server(server_factory, scratch_root: Path) -> LocalServer:  # noqa: ANN001
    return server_factory("bubblewrap", "--scratch-mb", "8", "--scratch-root", str(scratch_root))


@pytest.fixture(scope="module")
def guarded(server_factory) -> LocalServer:  # noqa: ANN001
    return server_factory(
        "bubblewrap", "--read-timeout-s", "2", "--max-connections-per-client", "8", secret=SECRET
    )


def _post(server: LocalServer, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    headers = {**(headers or {}), **({"authorization": f"Bearer {server.secret}"} if server.secret else {})}
    return httpx.post(f"{server.base_url}{path}", headers=headers, timeout=60, trust_env=False, **kwargs)


def _fds(server: LocalServer) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def _sample(server: LocalServer) -> tuple[int, int, int]:
    return _fds(server), pool_uid_processes(), scratch_mounts()


def _settled(server: LocalServer) -> tuple[int, int, int]:
    """(descriptors, sandbox processes, scratch mounts) once pre-start refills and releases are done:
    the same in two samples a second apart (or after 20 s)."""
    last, deadline = _sample(server), time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _sample(server)
        if now == last:
            break
        last = now
    return last


def assert_back_to(server: LocalServer, baseline: tuple[int, int, int]) -> None:
    """Descriptors, sandbox processes and scratch mounts are back at the baseline (pre-starts may lag)."""
    deadline = time.monotonic() + 20
    now = _sample(server)
    while any(n > b for n, b in zip(now, baseline)) and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _sample(server)
    assert now[0] <= baseline[0] + 2, f"descriptors {baseline[0]} -> {now[0]}"
    assert now[1] <= baseline[1], f"sandbox processes {baseline[1]} -> {now[1]}"
    assert now[2] <= baseline[2], f"scratch mounts {baseline[2]} -> {now[2]}"


# -- 1. file work: limits checked before any work, nothing blocks the event loop -----------------------
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"d/" * 1000 + "f": ""}, "over the 1024-byte limit"),
        ({"d/" * 100 + "f": ""}, "directories deep, over the limit of 16"),
        ({f"f{i}": "" for i in range(2000)}, "over the limit of 256"),
        ({"x" * 300: ""}, "over the 255-byte limit"),
        ({"a": "", "a/b": ""}, "given as a file and as a directory"),
    ],
)
def test_bad_files_get_a_400_naming_the_limit_before_any_work(server, files, message) -> None:  # noqa: ANN001
    baseline = _settled(server)
    start = time.monotonic()
    response = _post(server, "/run_code", json={"code": "print(1)", "files": files})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert time.monotonic() - start < 10
    assert_back_to(server, baseline)


def test_unencodable_file_name_is_refused_without_taking_a_sandbox(server) -> None:  # noqa: ANN001
    baseline = _settled(server)
    body = b'{"code": "print(1)", "files": {"bad\\ud800name": ""}}'
    for _ in range(12):
        response = _post(server, "/run_code", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        assert "not valid UTF-8" in response.text or "not valid JSON" in response.text, response.text
    assert_back_to(server, baseline)


def test_health_answers_within_a_second_while_big_file_requests_run(server) -> None:  # noqa: ANN001
    files = {
        f"{'/'.join(['d'] * 15)}/f{i}": base64.b64encode(os.urandom(20_000)).decode() for i in range(200)
    }
    code = "import os\nfor i in range(8):\n    open(f'sparse{i}', 'wb').truncate(4 << 20)\n"

    body = {"code": code, "files": files, "fetch_files": [f"sparse{i % 8}" for i in range(64)]}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        heavy = [pool.submit(_post, server, "/run_code", json=body) for _ in range(4)]
        worst = 0.0
        while not all(f.done() for f in heavy):  # /health from this thread, its own connection each time
            start = time.monotonic()
            assert httpx.get(f"{server.base_url}/health", timeout=5, trust_env=False).status_code == 200
            worst = max(worst, time.monotonic() - start)
            time.sleep(0.05)
        for future in heavy:
            reply = future.result().json()
            assert reply["status"] == "Success", reply
            assert sum(len(v) for v in reply["files"].values()) <= (16 << 20) * 4 // 3 + 16
    assert worst < 1.0


# -- 2. scratch: a budget enforced while the code runs; cleanup that no depth defeats ------------------
def test_scratch_budget_is_enforced_while_the_code_runs(server) -> None:  # noqa: ANN001
    code = (
        "written = 0\ntry:\n    for i in range(8):\n        with open(f'f{i}', 'wb') as f:\n"
        "            f.write(b'x' * (4 << 20))\n        written += 4\nexcept OSError as e:\n"
        "    print('stopped', e.errno)\nprint('written', written)\n"
    )
    out = run(run_code(server, code))["run_result"]["stdout"]
    assert "stopped 28" in out, out  # ENOSPC
    assert int(out.split("written")[1]) <= 8


def test_a_directory_tree_1500_deep_is_removed_after_the_call(server, scratch_root: Path) -> None:  # noqa: ANN001
    code = "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nprint('deep')\n"
    assert run(run_code(server, code))["run_result"]["stdout"] == "deep\n"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["find", str(scratch_root), "-mindepth", "40", "-print", "-quit"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if not found:
            break
        time.sleep(0.5)
    assert not found, "a deep tree outlived its call"


# -- 3 and 4. every hostile request type leaves the baseline untouched ---------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"code": "print(1)", "files": {"a": "", "a/b": ""}},
        {"code": "print(1)", "files": {"n" * 256: ""}},
        {"code": "import os\nos.mkdir('dir')", "fetch_files": ["dir", "missing", "."]},
        {"code": "import os\nos.symlink('/etc/passwd', 'link')", "fetch_files": ["link"]},
        {"code": "print(1)", "files": {"big": base64.b64encode(b"x" * (10 << 20)).decode()}},
    ],
)
def test_hostile_requests_leave_descriptors_uids_and_processes_at_baseline(server, body) -> None:  # noqa: ANN001
    baseline = _settled(server)
    for _ in range(12):
        response = _post(server, "/run_code", json=body)
        assert response.status_code in (200, 400), response.text
    assert_back_to(server, baseline)
    assert_healthy(server)


def test_fetch_files_naming_a_directory_leaves_it_out(server) -> None:  # noqa: ANN001
    reply = run(
        run_code(server, "import os\nos.mkdir('dir')\nopen('f', 'w').write('ok')", fetch_files=["dir", "f"])
    )
    assert reply["status"] == "Success", reply
    assert reply["files"] == {"f": base64.b64encode(b"ok").decode()}


# -- 5. sessions: nothing outlives a call; idle sessions' memory is capped ------------------------------
def test_background_processes_of_a_session_call_die_when_the_call_ends(server) -> None:  # noqa: ANN001
    async def go() -> list[str]:
        async with SandboxClient(server.base_url, timeout_s=60) as client:
            sid = await client.create_session(["python"])
            start = (
                "import subprocess\nchild = subprocess.Popen(['sleep', '300'])\n"
                "orphan = int(subprocess.run(['sh', '-c', 'sleep 300 >/dev/null 2>&1 & echo $!'], "
                "capture_output=True, text=True).stdout)\nprint('started')"
            )
            assert (await client.call_tool("python", {"code": start}, session_id=sid)).output == "started\n"
            check = (
                "import os\nfor pid in (child.pid, orphan):\n    try:\n        os.kill(pid, 0)\n"
                "        print('alive')\n    except ProcessLookupError:\n        print('gone')"
            )
            result = await client.call_tool("python", {"code": check}, session_id=sid)
            await client.close_session(sid)
            return result.output.split()

    assert run(go()) == ["gone", "gone"]


def test_idle_sessions_over_the_memory_cap_end_the_least_recently_used(server_factory) -> None:  # noqa: ANN001
    capped = server_factory("bubblewrap", "--idle-sessions-mb", "100", "--no-bfcl")

    async def go() -> tuple[bool, bool, float]:
        async with SandboxClient(capped.base_url, timeout_s=60) as client:
            sids = []
            for _ in range(4):
                sid = await client.create_session(["python"])
                result = await client.call_tool(
                    "python", {"code": "hog = bytearray(40 << 20)\nprint('ok')"}, session_id=sid
                )
                assert result.output == "ok\n", result
                sids.append(sid)
            idle_mb = httpx.get(f"{capped.base_url}/health", timeout=10, trust_env=False).json()[
                "idle_session_mb"
            ]
            newest, oldest = await _alive(client, sids[-1]), await _alive(client, sids[0])
            return newest, oldest, idle_mb

    newest, oldest, idle_mb = run(go())
    assert newest and not oldest, "the least recently used session should have been ended, the newest kept"
    assert idle_mb <= 100


async def _alive(client: SandboxClient, sid: str) -> bool:
    try:
        result = await client.call_tool("python", {"code": "print(len(hog) >> 20)"}, session_id=sid)
    except SandboxError:  # 404: the session was ended
        return False
    return result.output == "40\n"


# -- 6. clients without the secret ----------------------------------------------------------------------
def test_without_the_secret_the_body_is_never_read(guarded) -> None:  # noqa: ANN001
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(
            b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 10000000\r\n\r\n{"code": '
        )
        start = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/docs", None),
        ("GET", "/redoc", None),
        ("GET", "/openapi.json", None),
        ("POST", "/run_code", b"{not json"),
    ],
)
def test_without_the_secret_everything_but_health_is_401(guarded, method, path, body) -> None:  # noqa: ANN001
    response = httpx.request(
        method,
        f"{guarded.base_url}{path}",
        content=body,
        timeout=10,
        trust_env=False,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 401, response.text
    assert httpx.get(f"{guarded.base_url}/health", timeout=10, trust_env=False).status_code == 200


def test_half_sent_requests_are_closed_after_the_read_timeout(guarded) -> None:  # noqa: ANN001
    socks = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
        sock.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        socks.append(sock)
    time.sleep(3.5)
    for sock in socks:
        assert sock.recv(100) == b"", "the server kept a half-sent request open past --read-timeout-s"
        sock.close()


def test_one_client_address_cannot_hold_more_than_its_connections(guarded) -> None:  # noqa: ANN001
    socks = [
        socket.create_connection(("127.0.0.1", guarded.port), timeout=10, source_address=("127.0.0.3", 0))
        for _ in range(12)
    ]
    time.sleep(0.5)
    closed = 0
    for sock in socks:
        sock.settimeout(0.2)
        try:
            closed += sock.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:  # accepted and waiting for a request
            pass
        sock.close()
    assert closed >= 4, f"only {closed} of 12 connections from one address were refused (cap 8)"
    # another address is unaffected
    assert httpx.get(f"{guarded.base_url}/health", timeout=10, trust_env=False).status_code == 200


# -- 7. /health tells the truth; one client's sleepers do not delay everyone -----------------------------
def test_health_reports_unavailable_when_no_sandbox_can_start(server_factory, tmp_path: Path) -> None:  # noqa: ANN001
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    broken = server_factory("bubblewrap", "--no-bfcl", "--scratch-root", str(root), "--prestart", "1")
    health = httpx.get(f"{broken.base_url}/health", timeout=10, trust_env=False)
    assert health.status_code == 200 and health.json()["can_start"] is True and "queued" in health.json()
    root.rename(tmp_path / "moved")  # no new scratch directory can be made now
    try:
        with pytest.raises(
            SandboxError
        ):  # its pre-started sandbox lost its scratch, and its replacement fails
            run(run_code(broken, "print(1)"))
        time.sleep(1.0)
        health = httpx.get(f"{broken.base_url}/health", timeout=10, trust_env=False)
        assert health.status_code == 503, health.text
        assert health.json()["can_start"] is False and health.json()["problem"]
    finally:
        (tmp_path / "moved").rename(root)


def test_one_clients_sleepers_do_not_queue_ahead_of_another_client(server_factory) -> None:  # noqa: ANN001
    narrow = server_factory("bubblewrap", "--no-bfcl", "--max-concurrency", "1", "--wall-s", "3")

    async def go() -> float:
        hog = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with (
            httpx.AsyncClient(base_url=narrow.base_url, timeout=120, trust_env=False, transport=hog) as a,
            httpx.AsyncClient(base_url=narrow.base_url, timeout=120, trust_env=False) as b,
        ):
            sleepers = [
                asyncio.create_task(a.post("/run_code", json={"code": "import time\ntime.sleep(2)"}))
                for _ in range(5)
            ]
            await asyncio.sleep(0.5)
            start = time.monotonic()
            reply = (await b.post("/run_code", json={"code": "print(7)"})).json()
            latency = time.monotonic() - start
            assert reply["run_result"]["stdout"] == "7\n", reply
            await asyncio.gather(*sleepers)
            return latency

    # FIFO would put it behind all five (about 10 s); a fair share, behind the one running (about 2 s).
    assert run(go()) < 6.0
