"""The lookup_price tool: a key-value lookup served in-process, statelessly and inside sessions."""

from __future__ import annotations

from tests.sandbox.conftest import run
from tools_sandbox.client import SandboxClient
from tools_sandbox.tools import catalogue


def test_lookup_returns_the_price_and_names_the_known_items_on_a_miss() -> None:
    assert catalogue.call({"item": "Apple "}) == (True, "3", None)
    ok, _, error = catalogue.call({"item": "unicorn"})
    assert not ok and "no item 'unicorn'" in error and "apple" in error
    ok, _, error = catalogue.call({"item": 3})
    assert not ok and "must be a string" in error


def test_lookup_through_the_service_stateless_and_in_a_session(server_factory) -> None:
    server = server_factory("rlimit")

    async def calls() -> tuple[str, str, str]:
        async with SandboxClient(server.base_url) as client:
            tools = {t["function"]["name"] for t in await client.list_tools()}
            assert {"lookup_price", "calculator"} <= tools
            stateless = (await client.call_tool("lookup_price", {"item": "tea"})).output
            session = await client.create_session(["lookup_price", "calculator"])
            in_session = (await client.call_tool("lookup_price", {"item": "lamp"}, session_id=session)).output
            total = (
                await client.call_tool("calculator", {"expression": "25 * 3"}, session_id=session)
            ).output
            await client.close_session(session)
            return stateless, in_session, total

    assert run(calls()) == ("10", "25", "75")
