"""The client under load and under back-pressure, and the local server launcher."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.sandbox.conftest import run
from tools_sandbox.client import SandboxClient, SandboxError, SyncSandboxClient, local_sandbox_server

pytestmark = pytest.mark.timeout(300)


def test_500_calls_at_64_way_concurrency_have_zero_failures(server_factory) -> None:  # noqa: ANN001
    server = server_factory("bubblewrap", "--no-bfcl")

    async def scenario() -> tuple[list, dict]:
        async with SandboxClient(server.base_url, timeout_s=120) as client:
            semaphore = asyncio.Semaphore(64)
            sessions = [await client.create_session(["python"]) for _ in range(8)]

            async def one(i: int):  # noqa: ANN202 - a mix: one-shot runs, stateless and session tool calls
                async with semaphore:
                    if i % 3 == 0:
                        reply = await client.run_code(f"print({i} * 2)")
                        return reply["status"] == "Success" and reply["run_result"]["stdout"] == f"{i * 2}\n"
                    if i % 3 == 1:
                        result = await client.call_tool("python", {"code": f"{i} * 2"})
                    else:
                        result = await client.call_tool(
                            "python", {"code": f"{i} * 2"}, session_id=sessions[i % 8]
                        )
                    return result.ok and result.output == f"{i * 2}\n"

            results = await asyncio.gather(*(one(i) for i in range(500)), return_exceptions=True)
            metrics = await client.metrics()
            for sid in sessions:
                await client.close_session(sid)
            return results, metrics

    start = time.monotonic()
    results, metrics = run(scenario())
    failures = [r for r in results if r is not True]
    assert failures == [], failures[:5]
    assert metrics["failures"] == 0 and metrics["sandbox_errors"] == 0
    print(
        f"500 calls at 64-way concurrency in {time.monotonic() - start:.1f} s, "
        f"p50 {metrics['latency']['all']['p50_ms']:.1f} ms"
    )


def test_client_retries_through_429(server_factory) -> None:  # noqa: ANN001
    server = server_factory("bubblewrap", "--no-bfcl", "--max-concurrency", "1", "--queue-size", "1")

    async def scenario() -> tuple[list, dict]:
        async with SandboxClient(server.base_url, max_retries=20) as client:
            results = await asyncio.gather(*(client.run_code("print('ok')") for _ in range(6)))
            return results, await client.metrics()

    results, metrics = run(scenario())
    assert all(r["run_result"]["stdout"] == "ok\n" for r in results)
    assert metrics["rejected"] >= 1  # back-pressure happened and the client rode through it


def test_client_gives_up_with_the_servers_reason(server_factory) -> None:  # noqa: ANN001
    server = server_factory("bubblewrap", "--no-bfcl")

    async def scenario() -> None:
        async with SandboxClient(server.base_url) as client:
            with pytest.raises(SandboxError, match="HTTP 404: unknown tool 'nope'"):
                await client.call_tool("nope", {})
        async with SandboxClient("http://127.0.0.1:9", max_retries=1, timeout_s=2) as dead:
            with pytest.raises(SandboxError, match="failed after 2 attempts"):
                await dead.health()

    run(scenario())


def test_sync_client_and_tool_listing(server_factory) -> None:  # noqa: ANN001
    server = server_factory("bubblewrap", "--no-bfcl")
    with SyncSandboxClient(server.base_url) as client:
        names = {t["function"]["name"] for t in client.list_tools()}
        assert {"python", "calculator"} <= names
        assert all(t["type"] == "function" and "parameters" in t["function"] for t in client.list_tools())
        sid = client.create_session(["calculator"])
        result = client.call_tool("calculator", {"expression": "6*7"}, session_id=sid)
        assert result.ok and result.render() == "42"
        bad = client.call_tool("calculator", {"expression": "6*"}, session_id=sid)
        assert not bad.ok and bad.render().startswith("Error: calculator:")
        client.close_session(sid)


def test_local_server_reports_a_failed_start() -> None:
    with (
        pytest.raises(RuntimeError, match="(?s)did not become healthy.*no_such_tools.py"),
        local_sandbox_server(
            ["--no-bfcl", "--tools-module", "/nonexistent/no_such_tools.py"], ready_timeout_s=30
        ),
    ):
        pass
