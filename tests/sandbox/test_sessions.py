"""Stateful sessions on a real server: BFCL state across calls, isolation, timeouts, reaping, limits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.sandbox.conftest import assert_healthy, run
from tools_sandbox.client import SandboxClient, SandboxError
from tools_sandbox.tools import bfcl

pytestmark = pytest.mark.timeout(120)
needs_bfcl = pytest.mark.skipif(
    bfcl.package_dir() is None, reason="bfcl-eval is not installed (the `bfcl` extra)"
)

INITIAL_CONFIG = {  # from BFCL_v4_multi_turn_base.json, entry multi_turn_base_0
    "GorillaFileSystem": {
        "root": {
            "workspace": {
                "type": "directory",
                "contents": {
                    "document": {
                        "type": "directory",
                        "contents": {
                            "final_report.pdf": {
                                "type": "file",
                                "content": "Year2024 This is the final report content including "
                                "budget analysis and other sections.",
                            },
                            "previous_report.pdf": {
                                "type": "file",
                                "content": "Year203 This is the previous report content.",
                            },
                        },
                    },
                    "archive": {"type": "directory", "contents": {}},
                },
            }
        }
    },
    "TwitterAPI": {
        "username": "analyst_pro",
        "password": "Kj8#mP9$vL2",
        "authenticated": False,
        "tweets": {},
        "comments": {},
        "retweets": {},
        "following_list": [],
        "tweet_counter": 0,
    },
}


@pytest.fixture(scope="module")
def server(server_factory):  # noqa: ANN001, ANN201
    return server_factory("bubblewrap")


@needs_bfcl
def test_bfcl_session_keeps_state_across_calls(server) -> None:  # noqa: ANN001
    async def scenario() -> list:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session(["GorillaFileSystem", "TwitterAPI"], config=INITIAL_CONFIG)
            calls = [
                ("cd", {"folder": "document"}),
                ("mkdir", {"dir_name": "temp"}),
                ("mv", {"source": "final_report.pdf", "destination": "temp"}),
                ("cd", {"folder": "temp"}),
                ("ls", {}),
                ("grep", {"file_name": "final_report.pdf", "pattern": "budget analysis"}),
                ("authenticate_twitter", {"username": "analyst_pro", "password": "Kj8#mP9$vL2"}),
                ("post_tweet", {"content": "Report moved", "tags": ["#ops"]}),
                ("get_user_tweets", {"username": "analyst_pro"}),
            ]
            results = [await client.call_tool(name, args, session_id=sid) for name, args in calls]
            await client.close_session(sid)
            return results

    results = run(scenario())
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert json.loads(results[4].output) == {"current_directory_content": ["final_report.pdf"]}
    assert "budget analysis" in results[5].output
    tweets = json.loads(results[8].output)
    assert [t["content"] for t in tweets] == ["Report moved"]


@needs_bfcl
def test_sessions_do_not_share_state(server) -> None:  # noqa: ANN001
    async def scenario() -> tuple:
        async with SandboxClient(server.base_url) as client:
            first = await client.create_session(["GorillaFileSystem"], config=INITIAL_CONFIG)
            second = await client.create_session(["GorillaFileSystem"], config=INITIAL_CONFIG)
            await client.call_tool("touch", {"file_name": "only_in_first.txt"}, session_id=first)
            listing = await client.call_tool("ls", {}, session_id=second)
            py_a = await client.create_session(["python"])
            py_b = await client.create_session(["python"])
            await client.call_tool(
                "python", {"code": "secret = 7\nopen('f', 'w').write('a')"}, session_id=py_a
            )
            other = await client.call_tool(
                "python", {"code": "import os\nprint('secret' in dir(), os.listdir('.'))"}, session_id=py_b
            )
            for sid in (first, second, py_a, py_b):
                await client.close_session(sid)
            return listing, other

    listing, other = run(scenario())
    assert "only_in_first.txt" not in listing.output
    assert other.output == "False []\n"


def test_python_session_timeout_keeps_the_session_when_interruptible(server) -> None:  # noqa: ANN001
    async def scenario() -> tuple:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session(["python"])
            await client.call_tool("python", {"code": "kept = 'yes'"}, session_id=sid)
            slow = await client.call_tool("python", {"code": "import time\ntime.sleep(60)"}, session_id=sid)
            after = await client.call_tool("python", {"code": "kept"}, session_id=sid)
            await client.close_session(sid)
            return slow, after

    slow, after = run(scenario())
    assert not slow.ok and slow.timed_out and "still usable" in slow.error
    assert after.output == "'yes'\n"


def test_a_call_that_ignores_its_timeout_ends_the_session(server) -> None:  # noqa: ANN001
    code = (
        "import signal\nfor s in (signal.SIGALRM, signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass\n"
    )

    async def scenario() -> tuple:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session(["python"])
            start = time.monotonic()
            stuck = await client.call_tool("python", {"code": code}, session_id=sid)
            elapsed = time.monotonic() - start
            with pytest.raises(SandboxError) as gone:
                await client.call_tool("python", {"code": "1"}, session_id=sid)
            return stuck, elapsed, gone.value

    stuck, elapsed, gone = run(scenario())
    assert stuck.timed_out and "session was ended" in stuck.error
    assert elapsed < 3 + 2 + 2
    assert gone.status == 404 and "create a new session" in str(gone)
    assert_healthy(server)


def test_idle_and_old_sessions_are_reaped_and_the_count_is_bounded(server_factory) -> None:  # noqa: ANN001
    short = server_factory(
        "bubblewrap", "--session-idle-s", "1", "--session-lifetime-s", "3", "--max-sessions", "2", "--no-bfcl"
    )

    async def scenario() -> None:
        async with SandboxClient(short.base_url, max_retries=0) as client:
            idle = await client.create_session(["python"])
            busy = await client.create_session(["python", "calculator"])
            with pytest.raises(SandboxError) as full:
                await client.create_session(["python"])
            assert full.value.status == 429 and "--max-sessions" in str(full.value)
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:  # keep `busy` active, leave `idle` alone
                assert (await client.call_tool("calculator", {"expression": "1+1"}, session_id=busy)).ok
                await asyncio.sleep(0.3)
            with pytest.raises(SandboxError, match="no live session"):
                await client.call_tool("python", {"code": "1"}, session_id=idle)
            await asyncio.sleep(2.0)  # now past the 3 s lifetime, however active
            with pytest.raises(SandboxError, match="no live session"):
                await client.call_tool("calculator", {"expression": "1"}, session_id=busy)
            assert (await client.health())["sessions"] == 0

    run(scenario())
    assert_healthy(short)


def test_warm_session_calls_are_fast(server) -> None:  # noqa: ANN001
    async def scenario() -> float:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session(["python"])
            times = []
            for _ in range(30):
                start = time.perf_counter()
                assert (await client.call_tool("python", {"code": "1 + 1"}, session_id=sid)).output == "2\n"
                times.append(time.perf_counter() - start)
            await client.close_session(sid)
            return sorted(times)[len(times) // 2]

    assert run(scenario()) < 0.1  # the benchmark's goal is 20 ms; this only catches a cold path
