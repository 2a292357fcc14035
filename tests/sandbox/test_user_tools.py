"""User tool modules from a recipe: described and run inside the sandbox, with per-session state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sandbox.conftest import run, world_readable_tool_dir
from tools_sandbox.client import SandboxClient
from tools_sandbox.tools.user import locate

pytestmark = pytest.mark.timeout(120)

MODULE = '''
"""Tools of a hypothetical recipe."""
import os
import socket

ENV_NAME = "shop"


def whoami() -> dict:
    """Report where this tool runs."""
    try:
        socket.create_connection(("127.0.0.1", 80), timeout=1)
        network = "reachable"
    except OSError as exc:
        network = type(exc).__name__
    return {"uid": os.getuid(), "cwd": os.getcwd(), "network": network}


class Cart:
    """A shopping cart whose contents persist within a session."""

    def __init__(self, currency: str = "EUR"):
        self.currency = currency
        self.items = []

    def add_item(self, name: str, price: float) -> dict:
        """Add an item.

        Args:
            name: The item.
            price: Its price.
        """
        self.items.append((name, price))
        return {"count": len(self.items)}

    def total(self) -> str:
        """The cart's total."""
        return f"{sum(p for _, p in self.items):.2f} {self.currency}"


TOOLS = [whoami]
ENVIRONMENT = Cart
'''


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    root = world_readable_tool_dir()
    (root / "shop_tools.py").write_text(MODULE)
    (root / "shop_tools.py").chmod(0o644)
    return server_factory("bubblewrap", "--no-bfcl", "--tools-module", str(root / "shop_tools.py"))


def test_user_tools_are_listed_with_schemas_from_their_code(server) -> None:  # noqa: ANN001
    async def scenario() -> list[dict]:
        async with SandboxClient(server.base_url) as client:
            return [t["function"] for t in await client.list_tools()]

    tools = {t["name"]: t for t in run(scenario())}
    assert {"whoami", "add_item", "total"} <= set(tools)
    assert tools["add_item"]["parameters"]["properties"]["price"] == {
        "type": "number",
        "description": "Its price.",
    }


def test_user_tools_run_sandboxed_with_session_state(server) -> None:  # noqa: ANN001
    async def scenario() -> tuple:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session(["shop"], config={"shop": {"currency": "USD"}})
            await client.call_tool("add_item", {"name": "tea", "price": 2.5}, session_id=sid)
            await client.call_tool("add_item", {"name": "cake", "price": 4}, session_id=sid)
            total = await client.call_tool("total", {}, session_id=sid)
            where = await client.call_tool("whoami", {})
            bad = await client.call_tool("add_item", {"name": "x"}, session_id=sid)
            await client.close_session(sid)
            return total, where, bad

    total, where, bad = run(scenario())
    assert total.output == "6.50 USD"
    facts = json.loads(where.output)
    assert facts["uid"] != 0 and facts["cwd"] == "/sandbox" and facts["network"] != "reachable"
    assert not bad.ok and "price" in bad.error


def test_locate_finds_files_and_packages_without_importing(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("raise SystemExit('must not run')\n")
    found = locate(str(tmp_path / "mod.py"))
    assert found.module == "mod" and found.search_dir == str(tmp_path)
    assert locate("tools_sandbox.tools.calculator").module == "tools_sandbox.tools.calculator"
    with pytest.raises(ValueError, match="does not exist"):
        locate(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="not importable"):
        locate("no_such_package_xyz.tools")
