"""Real servers shared by the rollout tests: the fine-tuned tiny tool caller behind an embedded
engine process, and the sandbox service. Each starts once per session on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transformers

from rest_megatron.rollout.launch import ServerProcess, start_embedded_servers
from rest_megatron.testing.tiny_caller import tiny_tool_caller_dir


def run(coro: Any) -> Any:
    """Run a coroutine to completion (the tests are plain functions; no asyncio plugin needed)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def caller_dir() -> Path:
    return tiny_tool_caller_dir()


@pytest.fixture(scope="session")
def caller_tokenizer(caller_dir: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(caller_dir)


@pytest.fixture(scope="session")
def caller_model(caller_dir: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(caller_dir).eval()


@pytest.fixture(scope="session")
def engine(caller_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded engine serving the tiny tool caller."""
    servers = start_embedded_servers(
        caller_dir,
        1,
        log_dir=tmp_path_factory.mktemp("engine"),
        extra={"seed": 0, "num_threads": 1},
        timeout_s=180,
    )
    yield servers[0]
    servers[0].stop()


@pytest.fixture
def spare_engine(caller_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """A second engine of the same model, for one test to kill or reconfigure."""
    servers = start_embedded_servers(
        caller_dir, 1, log_dir=tmp_path, extra={"seed": 1, "num_threads": 1}, timeout_s=180
    )
    yield servers[0]
    servers[0].stop()


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    from tools_sandbox.client import local_sandbox_server

    with local_sandbox_server(["--no-bfcl"]) as server:
        yield server.base_url
