"""Contract for every registered tool, and schema generation.

Contract (any new tool must pass): its schema has a name, a description and an object of
parameters; calling it with no arguments and with wrongly typed arguments gives a ToolResult (ok or
an error message), never an HTTP error or a dead session.
"""

from __future__ import annotations

from typing import Literal

import pytest

from tests.sandbox.conftest import run
from tools_sandbox.client import SandboxClient
from tools_sandbox.tools import bfcl
from tools_sandbox.tools.registry import EnvSpec, ToolRegistry, builtin_registry
from tools_sandbox.tools.schema import from_bfcl_doc, function_schema

pytestmark = pytest.mark.timeout(300)
REGISTRY = builtin_registry()


def test_builtin_registry_has_the_expected_environments() -> None:
    assert {"calculator", "python"} <= set(REGISTRY.envs)
    if bfcl.package_dir() is not None:
        assert set(bfcl.CLASSES) <= set(REGISTRY.envs)
        assert sum(len(REGISTRY.envs[name].schemas) for name in bfcl.CLASSES) == 128


@pytest.mark.parametrize("schema", [t["function"] for t in REGISTRY.schemas()], ids=lambda s: s["name"])
def test_every_schema_is_a_function_schema(schema: dict) -> None:
    assert isinstance(schema["name"], str) and schema["name"].isidentifier()
    assert isinstance(schema["description"], str) and schema["description"]
    params = schema["parameters"]
    assert params["type"] == "object" and isinstance(params.get("properties", {}), dict)
    assert set(params.get("required", [])) <= set(params.get("properties", {}))
    assert "dict" not in str(params.get("properties"))  # BFCL's Python type names were converted


def _wrong_types(schema: dict) -> dict:
    props = schema["parameters"].get("properties", {})
    return {
        name: ([1] if prop.get("type") == "string" else "not-the-right-type") for name, prop in props.items()
    }


@pytest.mark.parametrize("env", sorted(REGISTRY.envs), ids=str)
def test_contract_bad_arguments_give_tool_errors_not_crashes(env: str, server_factory) -> None:  # noqa: ANN001
    server = server_factory("bubblewrap")
    schemas = REGISTRY.envs[env].schemas

    async def scenario() -> None:
        async with SandboxClient(server.base_url) as client:
            sid = await client.create_session([env])
            for schema in schemas:
                for arguments in ({}, _wrong_types(schema)):
                    result = await client.call_tool(schema["name"], arguments, session_id=sid)
                    assert isinstance(result.ok, bool) and isinstance(result.output, str)
                    if not result.ok:
                        assert result.error, (schema["name"], arguments)
            # still alive and answering
            probe = schemas[0]["name"]
            assert isinstance((await client.call_tool(probe, {}, session_id=sid)).ok, bool)
            await client.close_session(sid)

    run(scenario())


def test_function_schema_from_signature_and_docstring() -> None:
    def book(
        city: str, nights: int, kind: Literal["hotel", "hostel"] = "hotel", tags: list[str] | None = None
    ) -> dict:
        """Book a room.

        Args:
            city: Where to stay.
            nights: How many nights,
                at least one.
            kind: Hotel or hostel.
        """
        return {}

    schema = function_schema(book)
    assert schema["name"] == "book" and schema["description"] == "Book a room."
    props = schema["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "Where to stay."}
    assert props["nights"] == {"type": "integer", "description": "How many nights, at least one."}
    assert props["kind"]["enum"] == ["hotel", "hostel"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert schema["parameters"]["required"] == ["city", "nights"]


def test_bfcl_doc_types_become_json_schema() -> None:
    doc = {
        "name": "f",
        "description": "d",
        "parameters": {
            "type": "dict",
            "properties": {
                "x": {"type": "float"},
                "y": {"type": "tuple", "items": {"type": "integer"}},
                "z": {"type": "any"},
            },
            "required": ["x"],
        },
        "response": {"type": "dict"},
    }
    schema = from_bfcl_doc(doc)
    assert schema["parameters"] == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "array", "items": {"type": "integer"}},
            "z": {},
        },
        "required": ["x"],
    }
    assert "response" not in schema


def test_registry_refuses_clashing_names() -> None:
    registry = ToolRegistry()
    registry.register(EnvSpec("a", "module", ({"name": "t", "description": "", "parameters": {}},)))
    with pytest.raises(ValueError, match="tool 't' of 'b' clashes with the tool of the same name in 'a'"):
        registry.register(EnvSpec("b", "module", ({"name": "t", "description": "", "parameters": {}},)))
    with pytest.raises(KeyError, match="unknown environment or tool 'zz'"):
        registry.resolve(["zz"])
