"""Soak: hostile clients attack the service for about a minute beside normal clients.

Normal clients (127.0.0.1, with the secret) alternate calculator `/call`s and `/run_code` calls.
Hostile clients (127.0.0.2 with the secret, 127.0.0.3 without) loop over every attack of
`test_availability.py`: bad file requests, big fetches, deep trees, scratch fills, sleepers, leaked
session processes and memory, half-sent and oversized requests without the secret. It passes when
every normal call succeeds, their p99 latency stays under P99_BOUND_S, `/health` answers within
1 s throughout (plus twice the worst `/health` latency of the same server idle, measured just before:
on a machine shared with other jobs, scheduling alone can take seconds), and afterwards the
service's descriptors, sandbox processes, scratch mounts and the scratch file system's free space
are back where they were.

REST_SANDBOX_SOAK_S changes the duration (default 60 s). The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.sandbox.conftest import IS_ROOT, run
from tools_sandbox.client import LocalServer, local_sandbox_server
from tools_sandbox.metrics import Metrics

SOAK_S = float(os.environ.get("REST_SANDBOX_SOAK_S", "60"))
P99_BOUND_S = 8.0
"""A normal call may wait behind one hostile sleeper (the 3 s wall limit), then runs (~0.1 s idle).
Measured p99 on the 2-core development machine at load average 60-70 (other jobs): 0.66-1.4 s;
the bound leaves room for a slower, loaded CI machine."""
SECRET = "soak-secret-0123"
pytestmark = [
    pytest.mark.timeout(SOAK_S + 240),
    pytest.mark.skipif(not IS_ROOT, reason="needs per-call uids and tmpfs scratch"),
]

SERVER_ARGS = [
    "--backend",
    "bubblewrap",
    "--no-bfcl",
    "--wall-s",
    "3",
    "--cpu-s",
    "2",
    "--memory-mb",
    "256",
    "--max-processes",
    "32",
    "--file-size-mb",
    "8",
    "--scratch-mb",
    "16",
    "--max-concurrency",
    "4",
    "--queue-size",
    "256",
    "--warm-workers",
    "2",
    "--read-timeout-s",
    "2",
    "--max-connections-per-client",
    "16",
    "--idle-sessions-mb",
    "128",
    "--session-idle-s",
    "5",
]
HOSTILE_RUNS = [
    {"code": "print(1)", "files": {"d/" * 100 + "f": ""}},
    {"code": "print(1)", "files": {"a": "", "a/b": ""}},
    {"code": "print(1)", "files": {"n" * 300: ""}},
    {
        "code": "import os\nos.mkdir('dir')\nfor i in range(4):\n    open(f's{i}', 'wb').truncate(4 << 20)",
        "fetch_files": ["dir", *[f"s{i % 4}" for i in range(64)]],
    },
    {"code": "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')"},
    {"code": "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (4 << 20))\n    i += 1"},
    {"code": "import time\ntime.sleep(30)"},
    {"code": "import subprocess\nsubprocess.Popen(['sleep', '300'])\nprint('left behind')"},
]
SESSION_HOG = (
    "import subprocess\nhog = bytearray(48 << 20)\n"
    "subprocess.Popen(['sh', '-c', 'sleep 300 >/dev/null 2>&1 &'])\nprint('ok')"
)


def _state(server: LocalServer, scratch: Path) -> dict[str, int]:
    usage = os.statvfs(scratch)
    mounts = sum(1 for line in Path("/proc/self/mounts").read_text().splitlines() if str(scratch) in line)
    return {
        "fds": len(os.listdir(f"/proc/{server.process.pid}/fd")),
        "processes": _descendants(server.process.pid),
        "scratch_mounts": mounts,
        "free_mib": usage.f_bavail * usage.f_frsize >> 20,
    }


def _settle(server: LocalServer, scratch: Path, baseline: dict[str, int] | None = None) -> dict[str, int]:
    """Sample until two samples a second apart agree (or, given a baseline, until back at it)."""
    last, deadline = _state(server, scratch), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _state(server, scratch)
        if baseline is None and now == last:
            return now
        if baseline is not None and all(
            now[k] <= baseline[k] for k in ("fds", "processes", "scratch_mounts")
        ):
            return now
        last = now
    return last


async def _normal(base_url: str, stop: float, latencies: list[float], failures: list[str]) -> None:
    headers = {"authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, trust_env=False) as http:
        i = 0
        while time.monotonic() < stop:
            i += 1
            start = time.monotonic()
            try:
                if i % 2:
                    r = await http.post(
                        "/call", json={"tool": "calculator", "arguments": {"expression": f"{i} * 3"}}
                    )
                    ok = r.status_code == 200 and r.json()["ok"] and r.json()["output"].strip() == str(i * 3)
                else:
                    r = await http.post("/run_code", json={"code": f"print({i} + 1)"})
                    ok = r.status_code == 200 and r.json()["run_result"]["stdout"] == f"{i + 1}\n"
            except httpx.HTTPError as exc:
                ok, r = False, exc
            latencies.append(time.monotonic() - start)
            if not ok:
                failures.append(str(getattr(r, "text", r))[:300])


async def _hostile_with_secret(base_url: str, stop: float, count: list[int]) -> None:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    headers = {"authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, trust_env=False, transport=transport
    ) as http:
        i = 0
        while time.monotonic() < stop:
            body = HOSTILE_RUNS[i % len(HOSTILE_RUNS)]
            i += 1
            if i % 5 == 0:
                r = await http.post("/sessions", json={"tools": ["python"]})
                if r.status_code == 200:  # left open: the idle cap and the reaper must end it
                    await http.post(
                        f"/sessions/{r.json()['session_id']}/call",
                        json={"tool": "python", "arguments": {"code": SESSION_HOG}},
                    )
            await http.post("/run_code", json=body)
            count[0] += 1


async def _hostile_without_secret(host: str, port: int, stop: float, count: list[int]) -> None:
    attacks = [
        b"POST /run_code HTTP/1.1\r\nHost: x\r\n",  # half-sent headers
        b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 16000000\r\n\r\n{",
        b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 9\r\n\r\n{not json",
        b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    held: list[socket.socket] = []
    i = 0
    while time.monotonic() < stop:
        for sock in held[:-24]:  # keep up to 24 open (over the per-client cap), renew the rest
            sock.close()
        held = held[-24:]
        try:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind(("127.0.0.3", 0))
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 5)
            await asyncio.get_running_loop().sock_sendall(sock, attacks[i % len(attacks)])
            held.append(sock)
        except (OSError, asyncio.TimeoutError):
            sock.close()
        i += 1
        count[0] += 1
        await asyncio.sleep(0.02)
    for sock in held:
        sock.close()


def _health(base_url: str, stop: float, worst: list[float], bad: list[str]) -> None:
    """Poll /health from its own thread, on a new connection each time, so the test's busy event loop
    does not add to the measured latency."""
    while time.monotonic() < stop:
        start = time.monotonic()
        try:
            r = httpx.get(f"{base_url}/health", timeout=5, trust_env=False)
            if r.status_code != 200:
                bad.append(r.text[:200])
        except httpx.HTTPError as exc:
            bad.append(repr(exc))
        worst[0] = max(worst[0], time.monotonic() - start)
        time.sleep(0.2)


def _descendants(pid: int) -> int:
    """Processes below `pid` (the service's sandboxes and their helpers)."""
    count, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                count += len(children)
                stack += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return count


def test_soak_hostile_clients_beside_normal_clients(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o755)
    with local_sandbox_server(
        [*SERVER_ARGS, "--scratch-root", str(scratch)], secret=SECRET, log_path=str(tmp_path / "server.log")
    ) as server:
        baseline = _settle(server, scratch)
        idle_health, idle_bad = [0.0], []
        _health(server.base_url, time.monotonic() + 10, idle_health, idle_bad)
        latencies: list[float] = []
        failures: list[str] = []
        worst_health, bad_health = [0.0], []
        hostile, unauthenticated = [0], [0]

        async def soak() -> None:
            stop = time.monotonic() + SOAK_S
            await asyncio.gather(
                *[_normal(server.base_url, stop, latencies, failures) for _ in range(2)],
                *[_hostile_with_secret(server.base_url, stop, hostile) for _ in range(3)],
                _hostile_without_secret("127.0.0.1", server.port, stop, unauthenticated),
                asyncio.to_thread(_health, server.base_url, stop, worst_health, bad_health),
            )

        run(soak())
        after = _settle(server, scratch, baseline)
        p = Metrics.percentiles(latencies)
        print(
            f"\nsoak {SOAK_S:g} s: {len(latencies)} normal calls, {len(failures)} failures, p50 "
            f"{p.get('p50_ms', 0):.0f} ms, p99 {p.get('p99_ms', 0):.0f} ms, max {p.get('max_ms', 0):.0f} ms; "
            f"{hostile[0]} hostile requests with the secret, {unauthenticated[0]} without; /health worst "
            f"{worst_health[0] * 1000:.0f} ms (idle: {idle_health[0] * 1000:.0f} ms); "
            f"before {baseline}, after {after}"
        )

    assert latencies and not failures, failures[:5]
    assert p["p99_ms"] < P99_BOUND_S * 1000, p
    assert worst_health[0] < 1.0 + 2 * idle_health[0] and not bad_health, (
        worst_health,
        idle_health,
        bad_health[:3],
    )
    for key in ("fds", "processes", "scratch_mounts"):
        assert after[key] <= baseline[key] + (2 if key == "fds" else 0), (key, baseline, after)
    # the disk is shared with other jobs: allow their noise, not a call's scratch (16 MiB each)
    assert after["free_mib"] >= baseline["free_mib"] - 256, (baseline, after)
