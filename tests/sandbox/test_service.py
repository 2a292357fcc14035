"""The HTTP API on a real server: SandboxFusion compatibility, malformed requests, auth, 429, metrics."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest

from tests.sandbox.conftest import assert_healthy, run, run_code

pytestmark = pytest.mark.timeout(120)
SECRET = "test-secret-0123456789"


@pytest.fixture(scope="module")
def server(server_factory):  # noqa: ANN001, ANN201
    return server_factory("bubblewrap", secret=SECRET)


def _post(server, path: str, **kwargs) -> httpx.Response:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {SECRET}", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.base_url}{path}", headers=headers, timeout=60, trust_env=False, **kwargs)


def test_run_code_speaks_sandboxfusion(server) -> None:  # noqa: ANN001
    reply = run(
        run_code(
            server,
            "import sys\nprint(open('data/in.txt').read() + sys.stdin.read())\n"
            "open('out.bin', 'wb').write(bytes([1, 2, 3]))",
            stdin="!",
            files={"data/in.txt": base64.b64encode(b"hello").decode()},
            fetch_files=["out.bin", "missing.txt"],
        )
    )
    assert reply["status"] == "Success" and reply["compile_result"] is None
    result = reply["run_result"]
    assert result["status"] == "Finished" and result["return_code"] == 0 and result["stdout"] == "hello!\n"
    assert result["execution_time"] > 0
    assert reply["files"] == {"out.bin": base64.b64encode(bytes([1, 2, 3])).decode()}


def test_run_code_failures_and_bash(server) -> None:  # noqa: ANN001
    failed = run(run_code(server, "raise SystemExit(3)"))
    assert failed["status"] == "Failed" and failed["run_result"]["return_code"] == 3
    error = run(run_code(server, "1/0"))
    assert (
        "ZeroDivisionError" in error["run_result"]["stderr"]
        and "launcher" not in error["run_result"]["stderr"]
    )
    bash = run(run_code(server, "echo $((6*7)); echo err >&2; exit 4", language="bash"))
    assert bash["run_result"]["stdout"] == "42\n" and bash["run_result"]["stderr"] == "err\n"
    assert bash["run_result"]["return_code"] == 4


def test_run_timeout_can_only_lower_the_limit(server) -> None:  # noqa: ANN001
    start = time.monotonic()
    reply = run(run_code(server, "import time; time.sleep(30)", run_timeout=0.5))
    assert reply["run_result"]["status"] == "TimeLimitExceeded"
    assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 422, "not valid JSON"),
        (b'{"code": 5}', 422, "code: Input should be a valid string"),
        (b'{"code": "1", "run_timeout": "soon"}', 422, "run_timeout"),
        (b'{"language": "python"}', 422, "code: Field required"),
        (
            b'{"code": "1", "language": "cobol"}',
            400,
            "language 'cobol' is not supported here; use one of python, bash",
        ),
        (b'{"code": "1", "files": {"a": "%%%"}}', 400, "files['a'] is not valid base64"),
        (
            b'{"code": "1", "files": {"../x": ""}}',
            400,
            "must be a relative path inside the scratch directory",
        ),
        (
            b'{"code": "1", "files": {"a": "", "a/b": ""}}',
            400,
            "is given as a file and as a directory of 'a/b'",
        ),
    ],
)
def test_malformed_run_code_requests_get_a_4xx_that_says_what_is_wrong(server, body, status, message) -> None:  # noqa: ANN001
    response = _post(server, "/run_code", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_healthy(server)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        (
            "/call",
            {"tool": "calculator", "arguments": [1]},
            422,
            "arguments: Input should be a valid dictionary",
        ),
        ("/call", {"tool": "calculator", "argumnets": {}}, 422, "argumnets: Extra inputs are not permitted"),
        (
            "/call",
            {"tool": "no_such_tool", "arguments": {}},
            404,
            "unknown tool 'no_such_tool'; known tools:",
        ),
        ("/sessions", {"tools": []}, 422, "tools: List should have at least 1 item"),
        ("/sessions", {"tools": ["nope"]}, 404, "unknown environment or tool 'nope'; environments:"),
        ("/sessions/0123/call", {"tool": "python", "arguments": {}}, 404, "no live session '0123'"),
    ],
)
def test_malformed_tool_requests(server, path, body, status, message) -> None:  # noqa: ANN001
    response = _post(server, path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_huge_bodies_are_refused_before_they_are_read(server) -> None:  # noqa: ANN001
    declared = _post(server, "/run_code", content=b"x" * (17 << 20))
    assert declared.status_code == 413 and "larger than" in declared.json()["error"]

    def chunks():  # noqa: ANN202 - no Content-Length: the limit must hold while streaming
        for _ in range(40):
            yield b"y" * (1 << 20)

    streamed = _post(server, "/run_code", content=chunks())
    assert streamed.status_code == 413
    assert_healthy(server)


def test_shared_secret_guards_everything_but_health(server) -> None:  # noqa: ANN001
    assert httpx.get(f"{server.base_url}/health", trust_env=False).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(
            f"{server.base_url}/run_code", json={"code": "1"}, headers=headers, trust_env=False
        )
        assert response.status_code == 401 and "--secret-env" in response.json()["error"]
    assert httpx.get(f"{server.base_url}/tools", trust_env=False).status_code == 401
    assert (
        httpx.get(
            f"{server.base_url}/tools", headers={"X-Sandbox-Secret": SECRET}, trust_env=False
        ).status_code
        == 200
    )


def test_metrics_count_calls_failures_timeouts_and_latency(server) -> None:  # noqa: ANN001
    run(run_code(server, "print(1)"))
    run(run_code(server, "import time; time.sleep(30)", run_timeout=0.3))
    metrics = httpx.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {SECRET}"}, trust_env=False
    ).json()
    assert metrics["calls"] >= 2 and metrics["failures"] >= 1 and metrics["timeouts"] >= 1
    assert {"queue_depth", "running", "sessions", "rejected"} <= set(metrics)
    assert {"p50_ms", "p90_ms", "p99_ms"} <= set(metrics["latency"]["run_code"])


def test_full_queue_answers_429_with_retry_after(server_factory) -> None:  # noqa: ANN001
    tiny = server_factory("bubblewrap", "--max-concurrency", "1", "--queue-size", "0")
    slow = threading.Thread(target=lambda: run(run_code(tiny, "import time; time.sleep(2)")))
    slow.start()
    try:
        deadline = time.monotonic() + 10
        while httpx.get(f"{tiny.base_url}/health", trust_env=False).json()["running"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        response = httpx.post(f"{tiny.base_url}/run_code", json={"code": "print(1)"}, trust_env=False)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1 and "queue size 0" in response.json()["error"]
    finally:
        slow.join()
    assert_healthy(tiny)


def test_a_sandbox_that_cannot_start_is_a_sandbox_error_not_a_hang(server_factory) -> None:  # noqa: ANN001
    # /bin/false as the interpreter: every pre-started sandbox exits at once.
    broken = server_factory("bubblewrap", "--no-bfcl", "--sandbox-python", "/bin/false")
    start = time.monotonic()
    reply = run(run_code(broken, "print(1)"))
    assert reply["status"] == "SandboxError" and reply["message"], reply
    assert time.monotonic() - start < 30
