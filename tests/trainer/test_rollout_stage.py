"""The trainer's sandbox client sends the shared secret a remote sandbox service demands."""

from __future__ import annotations

import asyncio

import pytest

from rest_megatron.config import SandboxConfig
from rest_megatron.trainer.rollout_stage import sandbox_client
from tools_sandbox.client import SandboxError, local_sandbox_server


def _calculate(url: str, sandbox: SandboxConfig) -> str:
    async def call() -> str:
        client = sandbox_client(sandbox, url)
        try:
            return (await client.call_tool("calculator", {"expression": "6 * 7"})).output
        finally:
            await client.aclose()

    return asyncio.run(call())


def test_sandbox_client_takes_the_secret_from_the_named_environment_variable(monkeypatch) -> None:
    with local_sandbox_server(["--no-bfcl"], secret="s3cret-for-this-test") as server:
        sandbox = SandboxConfig(url=server.base_url, secret_env="TEST_SANDBOX_SECRET")
        monkeypatch.setenv("TEST_SANDBOX_SECRET", "s3cret-for-this-test")
        assert _calculate(server.base_url, sandbox) == "42"
        monkeypatch.setenv("TEST_SANDBOX_SECRET", "wrong")
        with pytest.raises(SandboxError) as refused:
            _calculate(server.base_url, sandbox)
        assert refused.value.status == 401
        monkeypatch.delenv("TEST_SANDBOX_SECRET")
        with pytest.raises(SandboxError):
            _calculate(server.base_url, sandbox)
